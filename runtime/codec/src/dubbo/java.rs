//! Java-side names in Dubbo bodies: parameter-type descriptors built from the Java type names
//! a caller writes, and the text of a serialized `Throwable`.

use super::body::parameter_types;
use crate::hessian::Value;

/// A JVM parameter descriptor (`Ljava/lang/String;I`), as a Dubbo request body carries it,
/// from either a descriptor or comma-separated Java type names (`java.lang.String, int`,
/// `long[]`). Blank input is a method without parameters (the empty descriptor). Input that
/// already is a valid descriptor list is returned as is (trimmed); anything else is read as
/// type names, and `Err` names the first one that is not a Java type name.
pub fn descriptor(types: &str) -> Result<String, String> {
    let types = types.trim();
    if types.is_empty() {
        return Ok(String::new());
    }
    if !types.contains(',') && !types.contains('.') && parameter_types(types).is_ok() {
        return Ok(types.to_owned());
    }
    if types.contains(';') && parameter_types(types).is_ok() {
        return Ok(types.to_owned());
    }
    let mut out = String::new();
    for name in types.split(',') {
        out.push_str(&java_descriptor(name.trim())?);
    }
    Ok(out)
}

/// The JVM descriptor of one Java type name: a primitive (`int` → `I`), a class
/// (`java.lang.String` → `Ljava/lang/String;`), either with `[]` suffixes for arrays
/// (`long[][]` → `[[J`). `Err` says why `name` is not a Java type name.
pub fn java_descriptor(name: &str) -> Result<String, String> {
    let mut base = name;
    let mut dims = 0;
    while let Some(inner) = base.strip_suffix("[]") {
        base = inner.trim_end();
        dims += 1;
    }
    let prim = match base {
        "boolean" => Some('Z'),
        "byte" => Some('B'),
        "char" => Some('C'),
        "short" => Some('S'),
        "int" => Some('I'),
        "long" => Some('J'),
        "float" => Some('F'),
        "double" => Some('D'),
        "void" => Some('V'),
        _ => None,
    };
    let valid_name = !base.is_empty()
        && base.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        });
    let mut out = "[".repeat(dims);
    match prim {
        Some(c) => out.push(c),
        None if valid_name => {
            out.push('L');
            out.push_str(&base.replace('.', "/"));
            out.push(';');
        }
        None => return Err(format!("{name:?} is not a Java type name")),
    }
    Ok(out)
}

/// `class: message` of a serialized Java `Throwable` (the exception of a response with flag
/// 0 or 3): the object's class and its `detailMessage` (or `message`) field; a map uses its
/// type name, a plain string is returned as is. Without a string message, just the class;
/// anything else is `exception`.
pub fn describe_exception(v: &Value) -> String {
    let (class, message) = match v {
        Value::Object(o) => (
            o.class.to_string(),
            o.get("detailMessage").or_else(|| o.get("message")),
        ),
        Value::Map(m) => (
            m.type_name.as_deref().unwrap_or("exception").to_owned(),
            m.get_str("detailMessage").or_else(|| m.get_str("message")),
        ),
        Value::String(s) => return s.clone(),
        _ => ("exception".to_owned(), None),
    };
    match message.and_then(Value::as_str) {
        Some(m) => format!("{class}: {m}"),
        None => class,
    }
}

#[cfg(test)]
mod tests {
    use crate::hessian::{Map, Object};

    use super::*;

    #[test]
    fn descriptors_from_java_names() {
        let cases = [
            ("", Ok("")),
            ("Ljava/lang/String;I", Ok("Ljava/lang/String;I")),
            ("IJ", Ok("IJ")),
            ("java.lang.String", Ok("Ljava/lang/String;")),
            ("java.lang.String, int", Ok("Ljava/lang/String;I")),
            ("long[], java.util.Map[][]", Ok("[J[[Ljava/util/Map;")),
            ("int", Ok("I")),
        ];
        for (input, want) in cases {
            assert_eq!(
                descriptor(input).as_deref(),
                want.map(str::to_owned).as_deref(),
                "{input}"
            );
        }
        assert!(descriptor("java lang").is_err());
        assert!(descriptor("a,,b").is_err());
    }

    #[test]
    fn more_descriptors_and_malformed_names() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("   ", Ok("")),
            (" I ", Ok("I")),
            ("[[D", Ok("[[D")),
            (
                "boolean,byte,char,short,long,float,double,void",
                Ok("ZBCSJFDV"),
            ),
            ("int []", Ok("[I")),
            ("a.b$C_1", Ok("La/b$C_1;")),
            // A single word that is not a descriptor is a class in the default package.
            ("String", Ok("LString;")),
            ("Ljava/lang/String", Err(())),
            ("java..lang", Err(())),
            (".x", Err(())),
            ("x.", Err(())),
            ("[]", Err(())),
            ("int,", Err(())),
            (",", Err(())),
            ("java.util.List<String>", Err(())),
            ("a-b", Err(())),
        ];
        for (input, want) in cases {
            let got = descriptor(input);
            match want {
                Ok(d) => assert_eq!(got.as_deref(), Ok(*d), "{input:?}"),
                Err(()) => assert!(got.is_err(), "{input:?} gave {got:?}"),
            }
        }
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("int", Ok("I")),
            ("int[][]", Ok("[[I")),
            ("java.lang.Object[]", Ok("[Ljava/lang/Object;")),
            ("", Err(())),
            ("[]", Err(())),
            ("in t", Err(())),
        ];
        for (input, want) in cases {
            let got = java_descriptor(input);
            match want {
                Ok(d) => assert_eq!(got.as_deref(), Ok(*d), "{input:?}"),
                Err(()) => assert!(got.is_err(), "{input:?} gave {got:?}"),
            }
        }
        assert_eq!(
            java_descriptor("a b"),
            Err("\"a b\" is not a Java type name".to_owned())
        );
    }

    #[test]
    fn exceptions_described() {
        let object = |fields: Vec<(&str, Value)>| {
            Value::Object(Object::new("java.lang.IllegalStateException", fields))
        };
        let map = |type_name: Option<&str>, entries: Vec<(&str, Value)>| {
            Value::Map(Map {
                type_name: type_name.map(Into::into),
                entries: entries
                    .into_iter()
                    .map(|(k, v)| (Value::string(k), v))
                    .collect(),
            })
        };
        let cases = [
            (
                object(vec![("detailMessage", Value::string("boom"))]),
                "java.lang.IllegalStateException: boom",
            ),
            (
                object(vec![("message", Value::string("m"))]),
                "java.lang.IllegalStateException: m",
            ),
            (
                object(vec![
                    ("message", Value::string("second")),
                    ("detailMessage", Value::string("first")),
                ]),
                "java.lang.IllegalStateException: first",
            ),
            // A null or non-string message leaves just the class.
            (
                object(vec![("detailMessage", Value::Null)]),
                "java.lang.IllegalStateException",
            ),
            (
                object(vec![("detailMessage", Value::Int(3))]),
                "java.lang.IllegalStateException",
            ),
            (object(vec![]), "java.lang.IllegalStateException"),
            (
                map(
                    Some("com.example.BizException"),
                    vec![("detailMessage", Value::string("no stock"))],
                ),
                "com.example.BizException: no stock",
            ),
            (
                map(None, vec![("message", Value::string("x"))]),
                "exception: x",
            ),
            (map(None, vec![]), "exception"),
            (Value::string("plain text"), "plain text"),
            (Value::Null, "exception"),
            (Value::Int(1), "exception"),
            (Value::Ref(0), "exception"),
        ];
        for (value, want) in cases {
            assert_eq!(describe_exception(&value), want, "{value:?}");
        }
    }
}
