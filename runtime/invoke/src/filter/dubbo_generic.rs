//! `dubbo_generic`: lets any-language applications call Dubbo services with JSON. The call's
//! body — `{"parameterTypes": [...], "args": [...]}`, a bare JSON array of arguments, or a
//! JSON-RPC 2.0 envelope `{"jsonrpc": "2.0", "method": ..., "params": [...], "id": ...}` —
//! becomes a Dubbo generic invocation, `$invoke(method, parameterTypes, args)` in Hessian2, sent
//! on the `dubbo` channel to the service named by the call's id; the Dubbo result comes back as
//! JSON (inside a JSON-RPC envelope when the call sent one). Parameter types not given are
//! inferred from the JSON values (`java.lang.String`, `java.lang.Integer`/`Long`,
//! `java.lang.Double`, `java.lang.Boolean`, `java.util.List`, `java.util.Map`). Not for Dubbo
//! framing or status mapping, which the channel does.

use std::task::{Context, Poll};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use futures_util::{FutureExt, future::BoxFuture};
use outrigger_codec::{
    Limits, dubbo,
    hessian::{self, Value, Writer},
};
use outrigger_config::Protocol;
use serde_json::{Map as JsonMap, Number, Value as Json};
use tower::{Layer, Service};

use crate::{
    error::{ErrorKind, InvokeError},
    request::{RpcRequest, RpcResponse},
};

/// Values built when back-references in a result are expanded; more is refused.
const MAX_RESULT_VALUES: usize = 1_000_000;

/// Layer of the `dubbo_generic` filter.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DubboGenericLayer;

impl<S> Layer<S> for DubboGenericLayer {
    type Service = DubboGeneric<S>;
    fn layer(&self, inner: S) -> DubboGeneric<S> {
        DubboGeneric { inner }
    }
}

/// The `dubbo_generic` filter around `S`.
#[derive(Clone, Debug)]
pub(crate) struct DubboGeneric<S> {
    inner: S,
}

impl<S> Service<RpcRequest> for DubboGeneric<S>
where
    S: Service<RpcRequest, Response = RpcResponse, Error = InvokeError>,
    S::Future: Send + 'static,
{
    type Response = RpcResponse;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<RpcResponse, InvokeError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RpcRequest) -> Self::Future {
        let answer = match rewrite(&mut req) {
            Ok(a) => a,
            Err(e) => return futures_util::future::ready(Err(e)).boxed(),
        };
        let fut = self.inner.call(req);
        async move { answer.respond(fut.await?) }.boxed()
    }
}

fn invalid(message: impl Into<String>) -> InvokeError {
    InvokeError::new(
        ErrorKind::Filter(tonic::Code::InvalidArgument),
        format!("dubbo_generic: {}", message.into()),
    )
}

/// How the answer is shaped.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The result as JSON.
    Plain,
    /// A JSON-RPC 2.0 envelope with this id.
    JsonRpc(Json),
}

/// Turns a JSON call into a Dubbo `$invoke` call for the dubbo channel.
fn rewrite(req: &mut RpcRequest) -> Result<Answer, InvokeError> {
    let body: Json = if req.data.iter().all(u8::is_ascii_whitespace) {
        Json::Array(Vec::new())
    } else {
        serde_json::from_slice(&req.data)
            .map_err(|e| invalid(format!("the body is not JSON: {e}")))?
    };
    let (method, types, args, answer) = match body {
        Json::Array(args) => (req.method.clone(), None, args, Answer::Plain),
        Json::Object(mut obj) if obj.contains_key("jsonrpc") => {
            let method = match obj.remove("method") {
                None => req.method.clone(),
                Some(Json::String(m)) if !m.is_empty() => m,
                Some(_) => return Err(invalid("the JSON-RPC method must be a non-empty string")),
            };
            let id = obj.remove("id").unwrap_or(Json::Null);
            let (types, args) = match obj.remove("params") {
                None | Some(Json::Null) => (None, Vec::new()),
                Some(Json::Array(args)) => (None, args),
                Some(Json::Object(p)) => explicit(p)?,
                Some(_) => return Err(invalid("JSON-RPC params must be an array or an object")),
            };
            (method, types, args, Answer::JsonRpc(id))
        }
        Json::Object(obj) => {
            let (types, args) = explicit(obj)?;
            (req.method.clone(), types, args, Answer::Plain)
        }
        _ => {
            return Err(invalid(
                "the body must be {\"parameterTypes\": [...], \"args\": [...]}, an array of arguments or a JSON-RPC envelope",
            ));
        }
    };
    let types = match types {
        Some(t) => t,
        None => args.iter().map(|a| infer_type(a).to_owned()).collect(),
    };
    let values: Vec<Value> = args.iter().map(to_hessian).collect();
    // The service version travels in the channel's metadata; `generic` marks the call.
    let inv = dubbo::RpcInvocation::generic(&req.id, "", &method, &types, values);
    let mut w = Writer::new();
    for a in &inv.args {
        w.write(a);
    }
    req.data = w.finish();
    req.method = inv.method;
    req.content_type.clear();
    req.dubbo.parameter_types = inv.parameter_types_desc;
    req.dubbo.generic = true;
    req.protocol = Some(Protocol::Dubbo);
    Ok(answer)
}

/// `{"parameterTypes": [...], "args": [...]}` (both optional).
fn explicit(
    mut obj: JsonMap<String, Json>,
) -> Result<(Option<Vec<String>>, Vec<Json>), InvokeError> {
    let args = match obj.remove("args") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a,
        Some(_) => return Err(invalid("\"args\" must be an array")),
    };
    let types = match obj.remove("parameterTypes") {
        None | Some(Json::Null) => None,
        Some(Json::Array(t)) => Some(
            t.into_iter()
                .map(|t| match t {
                    Json::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                    _ => Err(invalid("\"parameterTypes\" must be Java type names")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(invalid("\"parameterTypes\" must be an array")),
    };
    if let Some(unknown) = obj.keys().next() {
        return Err(invalid(format!(
            "unknown key {unknown:?} (expected parameterTypes and args)"
        )));
    }
    if let Some(t) = &types
        && t.len() != args.len()
    {
        return Err(invalid(format!(
            "{} parameter types for {} arguments",
            t.len(),
            args.len()
        )));
    }
    Ok((types, args))
}

/// The Java type a JSON value is sent as when no type is given.
fn infer_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "java.lang.Object",
        Json::Bool(_) => "java.lang.Boolean",
        Json::Number(n) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => "java.lang.Integer",
            Some(_) => "java.lang.Long",
            None => "java.lang.Double",
        },
        Json::String(_) => "java.lang.String",
        Json::Array(_) => "java.util.List",
        Json::Object(_) => "java.util.Map",
    }
}

/// A JSON value as Hessian2. Nesting is bounded by the JSON parser's recursion limit.
fn to_hessian(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(Value::Long(i), Value::Int),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::List(hessian::List {
            type_name: None,
            items: items.iter().map(to_hessian).collect(),
        }),
        Json::Object(m) => Value::string_map(m.iter().map(|(k, v)| (k.clone(), to_hessian(v)))),
    }
}

/// A Hessian value as JSON: objects become their fields, binary becomes base64, dates their
/// milliseconds, a back-reference that could not be expanded (a cycle) null.
fn to_json(v: &Value) -> Json {
    match v {
        Value::Null | Value::Ref(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Long(l) | Value::Date(l) => Json::from(*l),
        Value::Double(d) => Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Binary(b) => Json::String(BASE64.encode(b)),
        Value::List(l) => Json::Array(l.items.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(
            m.entries
                .iter()
                .map(|(k, v)| (key(k), to_json(v)))
                .collect(),
        ),
        Value::Object(o) => Json::Object(
            o.fields
                .iter()
                .map(|(n, v)| (n.to_string(), to_json(v)))
                .collect(),
        ),
    }
}

/// A map key as a JSON object key.
fn key(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Long(l) => l.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        other => to_json(other).to_string(),
    }
}

impl Answer {
    /// The Dubbo result (one Hessian2 value) as the JSON answer.
    fn respond(self, mut resp: RpcResponse) -> Result<RpcResponse, InvokeError> {
        let bad = |e: String| {
            InvokeError::new(
                ErrorKind::Unavailable,
                format!("dubbo_generic: the result is not hessian2: {e}"),
            )
        };
        let value = if resp.data.is_empty() {
            Value::Null
        } else {
            let mut r = hessian::Reader::with_limits(resp.data.clone(), &Limits::default());
            let v = r.read_value().map_err(|e| bad(e.to_string()))?;
            hessian::resolve_refs(std::slice::from_ref(&v), MAX_RESULT_VALUES)
                .map_err(|e| bad(e.to_string()))?
                .pop()
                .unwrap_or(Value::Null)
        };
        let result = to_json(&value);
        let json = match self {
            Answer::Plain => result,
            Answer::JsonRpc(id) => {
                serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
            }
        };
        resp.data = Bytes::from(json.to_string());
        resp.content_type = "application/json".to_owned();
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    fn req(body: &str) -> RpcRequest {
        let mut r = RpcRequest::new(
            "org.apache.dubbo.samples.api.GreetingsService",
            "sayHello",
            tokio::time::Instant::now(),
        );
        r.content_type = "application/json".into();
        r.data = Bytes::from(body.to_owned());
        r.verb = http::Method::POST;
        r
    }

    /// The generic call's (method, parameter types, args) as the channel would send them.
    fn sent(r: &RpcRequest) -> (String, Vec<String>, Vec<Value>) {
        let mut reader = hessian::Reader::new(r.data.clone());
        let method = reader.read_string().expect("method");
        let list = |v: Value| match v {
            Value::List(l) => l.items,
            other => panic!("not a list: {other:?}"),
        };
        let types = list(reader.read_value().expect("types"))
            .into_iter()
            .map(|t| t.as_str().expect("string").to_owned())
            .collect();
        let args = list(reader.read_value().expect("args"));
        assert!(reader.is_empty());
        (method, types, args)
    }

    /// Body, then the invoked method, parameter types, arguments and answer shape.
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], Vec<Value>, Answer);

    #[test]
    fn request_shapes_become_invoke_calls() {
        let cases: &[Case<'_>] = &[
            (
                r#"{"parameterTypes":["java.lang.String"],"args":["world"]}"#,
                "sayHello",
                &["java.lang.String"],
                vec![Value::string("world")],
                Answer::Plain,
            ),
            (
                r#"[1, 5000000000, 1.5, true, null, "x"]"#,
                "sayHello",
                &[
                    "java.lang.Integer",
                    "java.lang.Long",
                    "java.lang.Double",
                    "java.lang.Boolean",
                    "java.lang.Object",
                    "java.lang.String",
                ],
                vec![
                    Value::Int(1),
                    Value::Long(5_000_000_000),
                    Value::Double(1.5),
                    Value::Bool(true),
                    Value::Null,
                    Value::string("x"),
                ],
                Answer::Plain,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"plus","params":[1,2],"id":9527}"#,
                "plus",
                &["java.lang.Integer", "java.lang.Integer"],
                vec![Value::Int(1), Value::Int(2)],
                Answer::JsonRpc(Json::from(9527)),
            ),
            (
                r#"{"jsonrpc":"2.0","params":{"parameterTypes":["int"],"args":[3]},"id":"a"}"#,
                "sayHello",
                &["int"],
                vec![Value::Int(3)],
                Answer::JsonRpc(Json::from("a")),
            ),
            ("", "sayHello", &[], vec![], Answer::Plain),
        ];
        for (body, method, types, args, answer) in cases {
            let mut r = req(body);
            assert_eq!(rewrite(&mut r).expect(body), *answer, "{body}");
            assert_eq!(r.method, "$invoke");
            assert_eq!(r.protocol, Some(Protocol::Dubbo));
            assert!(r.dubbo.generic);
            assert_eq!(
                r.dubbo.parameter_types,
                "Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;"
            );
            assert!(r.headers.is_empty(), "nothing travels as metadata");
            let (m, t, a) = sent(&r);
            assert_eq!(m, *method, "{body}");
            assert_eq!(t, *types, "{body}");
            assert_eq!(a, *args, "{body}");
        }
    }

    #[test]
    fn nested_values_cross_both_ways() {
        let json: Json =
            serde_json::from_str(r#"{"a":[1,{"b":null}],"c":"d","e":2.5}"#).expect("json");
        assert_eq!(to_json(&to_hessian(&json)), json);
        let object = Value::Object(hessian::Object::new(
            "com.example.User",
            [("id", Value::string("A003")), ("age", Value::Int(7))],
        ));
        assert_eq!(
            to_json(&object),
            serde_json::json!({"id": "A003", "age": 7})
        );
        assert_eq!(
            to_json(&Value::Binary(Bytes::from_static(b"hi!?"))),
            "aGkhPw=="
        );
    }

    #[test]
    fn bad_bodies_are_invalid_arguments() {
        for body in [
            "not json",
            "42",
            r#"{"args":"x"}"#,
            r#"{"parameterTypes":["a"],"args":[]}"#,
            r#"{"parameterTypes":[1],"args":[1]}"#,
            r#"{"args":[],"extra":1}"#,
            r#"{"jsonrpc":"2.0","method":5}"#,
            r#"{"jsonrpc":"2.0","params":"x"}"#,
        ] {
            let e = rewrite(&mut req(body)).expect_err(body);
            assert_eq!(
                e.kind(),
                ErrorKind::Filter(tonic::Code::InvalidArgument),
                "{body}"
            );
            assert!(
                e.message().starts_with("dubbo_generic: "),
                "{}",
                e.message()
            );
        }
    }

    #[tokio::test]
    async fn results_come_back_as_json() {
        let channel = tower::service_fn(|r: RpcRequest| async move {
            let (method, _, args) = sent(&r);
            let mut w = Writer::new();
            w.write(&Value::List(hessian::List {
                type_name: None,
                items: vec![
                    Value::string(method),
                    args.into_iter().next().unwrap_or(Value::Null),
                ],
            }));
            Ok::<_, InvokeError>(RpcResponse {
                data: w.finish(),
                ..Default::default()
            })
        });
        let svc = DubboGenericLayer.layer(channel);
        let resp = svc
            .clone()
            .oneshot(req(r#"{"args":["world"]}"#))
            .await
            .expect("plain");
        assert_eq!(resp.content_type, "application/json");
        assert_eq!(resp.data, r#"["sayHello","world"]"#);
        let resp = svc
            .oneshot(req(
                r#"{"jsonrpc":"2.0","method":"echo","params":[7],"id":1}"#,
            ))
            .await
            .expect("json-rpc");
        let v: Json = serde_json::from_slice(&resp.data).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":1,"result":["echo",7]})
        );
    }
}
