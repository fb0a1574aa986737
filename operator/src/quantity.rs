//! Kubernetes resource quantities (`50m`, `128Mi`, `1.5`, `2e3`): parsing by the API server's
//! grammar, so a bad annotation is caught at admission with a warning instead of the pod being
//! rejected later. Not an exact arbitrary-precision implementation: values are compared as `f64`,
//! which is ample for requests and limits.

/// A quantity that parsed, with its value in base units (cores, bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    /// The text as given, which is what goes into the pod.
    pub text: String,
    /// The value in base units.
    pub value: f64,
}

/// Why a string is not a usable quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not of the quantity grammar.
    #[error("\"{0}\" is not a Kubernetes quantity (e.g. 100m, 0.5, 64Mi, 1G)")]
    Syntax(String),
    /// A negative request or limit.
    #[error("\"{0}\" is negative")]
    Negative(String),
}

/// Parses a non-negative quantity.
pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
    let syntax = || QuantityError::Syntax(text.to_owned());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, digits) = match number.as_bytes().first() {
        Some(b'-') => (true, &number[1..]),
        Some(b'+') => (false, &number[1..]),
        _ => (false, number),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return Err(syntax());
    }
    let mantissa: f64 = format!("0{whole}.{fraction}0")
        .parse()
        .map_err(|_| syntax())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e = &exp[1..];
            let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
            if unsigned.is_empty() || !all_digits(unsigned) {
                return Err(syntax());
            }
            let power: i32 = e.parse().map_err(|_| syntax())?;
            10f64.powi(power)
        }
        _ => return Err(syntax()),
    };
    if negative && mantissa != 0.0 {
        return Err(QuantityError::Negative(text.to_owned()));
    }
    Ok(Quantity {
        text: text.to_owned(),
        value: mantissa * multiplier,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn quantities() {
        let ok = [
            ("50m", 0.05),
            ("1", 1.0),
            ("0.5", 0.5),
            (".5", 0.5),
            ("2.", 2.0),
            ("+1", 1.0),
            ("32Mi", 32.0 * 1024.0 * 1024.0),
            ("1Gi", 1024.0 * 1024.0 * 1024.0),
            ("128M", 128e6),
            ("1k", 1000.0),
            ("2e3", 2000.0),
            ("1E-3", 0.001),
            ("100n", 100e-9),
            ("0", 0.0),
        ];
        for (text, value) in ok {
            let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                (q.value - value).abs() <= value * 1e-12,
                "{text}: {} != {value}",
                q.value
            );
            assert_eq!(q.text, text);
        }
        let bad = [
            ("", "syntax"),
            ("abc", "syntax"),
            ("1.2.3", "syntax"),
            ("10MB", "syntax"),
            ("1mi", "syntax"),
            ("1 Mi", "syntax"),
            ("e3", "syntax"),
            ("1e", "syntax"),
            ("1e+", "syntax"),
            ("Mi", "syntax"),
            ("-1", "negative"),
            ("-50m", "negative"),
        ];
        for (text, kind) in bad {
            match (parse(text), kind) {
                (Err(QuantityError::Syntax(_)), "syntax")
                | (Err(QuantityError::Negative(_)), "negative") => {}
                (other, _) => panic!("{text:?}: expected {kind}, got {other:?}"),
            }
        }
    }
}
