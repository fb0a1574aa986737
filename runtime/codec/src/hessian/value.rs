//! The Hessian value tree. Names that repeat on the wire by reference (class names, field
//! names, list and map types) are shared `Arc<str>`s, so reading N instances of a class costs
//! N value vectors, not N copies of its field names.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::Error;

/// One Hessian value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `N`.
    Null,
    /// `T` / `F`.
    Bool(bool),
    /// A 32-bit int (Java `int`).
    Int(i32),
    /// A 64-bit long (Java `long`).
    Long(i64),
    /// A double (Java `double`; also how floats travel).
    Double(f64),
    /// A `java.util.Date`, in milliseconds since the Unix epoch.
    Date(i64),
    /// A string.
    String(String),
    /// A `byte[]`.
    Binary(Bytes),
    /// A list or array.
    List(List),
    /// A map.
    Map(Map),
    /// An object of a class.
    Object(Object),
    /// A back-reference to the n-th list, map or object of the same stream, counted in the
    /// order they start (0 is the first).
    Ref(u32),
}

/// A list, typed (`[string`, `java.util.ArrayList`, …) or not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct List {
    /// Java type name, if the stream gave one.
    pub type_name: Option<Arc<str>>,
    /// The elements.
    pub items: Vec<Value>,
}

/// A map, typed (`java.util.TreeMap`, …) or not (`H`, a `HashMap`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map {
    /// Java type name, if the stream gave one.
    pub type_name: Option<Arc<str>>,
    /// The entries, in wire order.
    pub entries: Vec<(Value, Value)>,
}

/// An object: a class name and its fields in definition order.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// Java class name.
    pub class: Arc<str>,
    /// Field names and values, in the order of the class definition.
    pub fields: Vec<(Arc<str>, Value)>,
}

impl Object {
    /// An object of `class` with `fields`.
    pub fn new<N: Into<Arc<str>>>(
        class: impl Into<Arc<str>>,
        fields: impl IntoIterator<Item = (N, Value)>,
    ) -> Self {
        Self {
            class: class.into(),
            fields: fields.into_iter().map(|(n, v)| (n.into(), v)).collect(),
        }
    }

    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }
}

impl Map {
    /// The value of the first entry whose key is the string `key`.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

impl Value {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    /// A list of `items` with Java type `type_name` (e.g. `[string` for `String[]`).
    pub fn typed_list(type_name: impl Into<Arc<str>>, items: Vec<Value>) -> Self {
        Value::List(List {
            type_name: Some(type_name.into()),
            items,
        })
    }

    /// An untyped map (`HashMap`) with string keys.
    pub fn string_map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::Map(Map {
            type_name: None,
            entries: entries
                .into_iter()
                .map(|(k, v)| (Value::String(k.into()), v))
                .collect(),
        })
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An int or long as `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i64::from(i)),
            Value::Long(l) => Some(l),
            _ => None,
        }
    }

    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// Expands the back-references of one stream's values — pass every value read from the
/// stream, in order, since references count across them — into a plain tree.
///
/// A reference to a value that contains it (a cycle, such as a Java exception whose `cause`
/// is itself) stays a [`Value::Ref`]; so does one naming no value. At most `max_values`
/// values are built and expansion nests at most 256 deep, so a small body of chained
/// references cannot blow up memory or the stack.
pub fn resolve_refs(stream: &[Value], max_values: usize) -> Result<Vec<Value>, Error> {
    let mut targets = Vec::new();
    for v in stream {
        number(v, &mut targets);
    }
    let ids: HashMap<*const Value, u32> = targets
        .iter()
        .enumerate()
        .map(|(i, v)| (*v as *const Value, i as u32))
        .collect();
    let mut ctx = Expand {
        targets: &targets,
        ids: &ids,
        open: Vec::new(),
        budget: max_values,
        max_values,
    };
    stream.iter().map(|v| ctx.expand(v)).collect()
}

/// Collects lists, maps and objects in the order a reader numbers them (pre-order).
fn number<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::List(l) => {
            out.push(v);
            l.items.iter().for_each(|i| number(i, out));
        }
        Value::Map(m) => {
            out.push(v);
            for (k, val) in &m.entries {
                number(k, out);
                number(val, out);
            }
        }
        Value::Object(o) => {
            out.push(v);
            o.fields.iter().for_each(|(_, f)| number(f, out));
        }
        _ => {}
    }
}

struct Expand<'a> {
    targets: &'a [&'a Value],
    ids: &'a HashMap<*const Value, u32>,
    open: Vec<u32>,
    budget: usize,
    max_values: usize,
}

const MAX_EXPAND_DEPTH: usize = 256;

impl Expand<'_> {
    fn expand(&mut self, v: &Value) -> Result<Value, Error> {
        self.budget = self.budget.checked_sub(1).ok_or(Error::RefExpansion {
            max: self.max_values,
        })?;
        if let Value::Ref(n) = *v {
            return match self.targets.get(n as usize) {
                Some(target) if !self.open.contains(&n) => self.expand(target),
                _ => Ok(Value::Ref(n)),
            };
        }
        let Some(&id) = self.ids.get(&(v as *const Value)) else {
            return Ok(v.clone());
        };
        if self.open.len() >= MAX_EXPAND_DEPTH {
            return Err(Error::TooDeep {
                max: MAX_EXPAND_DEPTH,
            });
        }
        self.open.push(id);
        let out = match v {
            Value::List(l) => Value::List(List {
                type_name: l.type_name.clone(),
                items: l
                    .items
                    .iter()
                    .map(|i| self.expand(i))
                    .collect::<Result<_, _>>()?,
            }),
            Value::Map(m) => Value::Map(Map {
                type_name: m.type_name.clone(),
                entries: m
                    .entries
                    .iter()
                    .map(|(k, val)| Ok((self.expand(k)?, self.expand(val)?)))
                    .collect::<Result<_, Error>>()?,
            }),
            Value::Object(o) => Value::Object(Object {
                class: o.class.clone(),
                fields: o
                    .fields
                    .iter()
                    .map(|(n, f)| Ok((n.clone(), self.expand(f)?)))
                    .collect::<Result<_, Error>>()?,
            }),
            other => other.clone(),
        };
        self.open.pop();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_shared_and_keeps_cycles() {
        // [[1], Ref(1)] — the second element shares the first.
        let inner = Value::List(List {
            type_name: None,
            items: vec![Value::Int(1)],
        });
        let outer = Value::List(List {
            type_name: None,
            items: vec![inner.clone(), Value::Ref(1)],
        });
        let out = resolve_refs(std::slice::from_ref(&outer), 100).expect("resolve");
        assert_eq!(
            out[0],
            Value::List(List {
                type_name: None,
                items: vec![inner.clone(), inner],
            })
        );
        // An exception whose cause is itself keeps the self-reference.
        let exc = Value::Object(Object::new(
            "java.lang.Exception",
            [("cause", Value::Ref(0))],
        ));
        let out = resolve_refs(std::slice::from_ref(&exc), 100).expect("resolve");
        assert_eq!(out[0], exc);
    }

    #[test]
    fn budget_stops_expansion() {
        // Each list holds two refs to the previous one: 2^30 values if fully expanded.
        let mut stream = vec![Value::List(List::default())];
        for i in 0..30u32 {
            stream.push(Value::List(List {
                type_name: None,
                items: vec![Value::Ref(i), Value::Ref(i)],
            }));
        }
        assert_eq!(
            resolve_refs(&stream, 10_000),
            Err(Error::RefExpansion { max: 10_000 })
        );
    }
}
