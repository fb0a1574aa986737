//! Dubbo in the proxy core: what routes see of a Dubbo request (`service`/`id` = the service
//! path, `version`, `method` = the method name — for a generic `$invoke`, the method it
//! invokes — and the attachments, decoded only when a route asks for one), and the proxy's
//! own answers in Dubbo's status codes (no route → 60 SERVICE_NOT_FOUND, overflow and a
//! malformed request → 40 BAD_REQUEST, timeout → 30 CLIENT_TIMEOUT, connect failure or reset →
//! 70 SERVICE_ERROR, no healthy host → 80 SERVER_ERROR, an open circuit breaker or a rate limit →
//! 100 SERVER_THREADPOOL_EXHAUSTED_ERROR) with a message that starts with
//! `[outrigger:<cause>]`. Not for serving connections (see `xproto`).

use std::{cell::OnceCell, time::Duration};

use outrigger_codec::{Limits, dubbo, hessian::Value};
use outrigger_config::Protocol;

use outrigger_core::{Cause, Failure, ProxyError, error_marker};
use outrigger_pool::{Dubbo, MuxPool};

use crate::{
    cluster::{Host, UpstreamPool},
    route::RequestView,
    xproto::ServerProtocol,
};

/// A Dubbo request as routes see it.
pub(crate) struct DubboView<'a> {
    frame: &'a dubbo::Frame,
    target: dubbo::Target,
    limits: &'a Limits,
    /// Attachments and the generic call's method, decoded on first use.
    rest: OnceCell<Rest>,
}

#[derive(Default)]
struct Rest {
    attachments: Vec<(String, String)>,
    generic_method: Option<String>,
}

impl DubboView<'_> {
    fn rest(&self) -> &Rest {
        self.rest.get_or_init(|| {
            let Ok(inv) = dubbo::RpcInvocation::decode(self.frame, self.limits) else {
                return Rest::default();
            };
            let generic_method = (inv.method == dubbo::GENERIC_INVOKE)
                .then(|| inv.args.first().and_then(Value::as_str).map(str::to_owned))
                .flatten();
            let attachments = inv
                .attachments
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Int(_) | Value::Long(_) => v.as_i64().map(|n| (k, n.to_string())),
                    Value::Bool(b) => Some((k, b.to_string())),
                    _ => None,
                })
                .collect();
            Rest {
                attachments,
                generic_method,
            }
        })
    }
}

impl RequestView for DubboView<'_> {
    fn protocol(&self) -> Protocol {
        Protocol::Dubbo
    }

    fn method(&self) -> Option<&str> {
        if self.target.method == dubbo::GENERIC_INVOKE
            && let Some(m) = &self.rest().generic_method
        {
            return Some(m);
        }
        Some(&self.target.method)
    }

    fn path(&self) -> Option<&str> {
        None
    }

    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        match name {
            "service" | "id" => pred(&self.target.service_path),
            "version" => pred(&self.target.service_version),
            "method" => self.method().is_some_and(pred),
            _ => self
                .rest()
                .attachments
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(name) && pred(v)),
        }
    }
}

impl ServerProtocol for Dubbo {
    type View<'a> = DubboView<'a>;

    fn view<'a>(request: &'a dubbo::Frame, limits: &'a Limits) -> Result<DubboView<'a>, String> {
        let target = dubbo::Target::decode(request, limits)
            .map_err(|e| format!("undecodable dubbo request: {e}"))?;
        Ok(DubboView {
            frame: request,
            target,
            limits,
            rest: OnceCell::new(),
        })
    }

    fn describe(view: &DubboView<'_>) -> String {
        format!(
            "dubbo service={} version={} method={}",
            view.target.service_path,
            if view.target.service_version.is_empty() {
                "-"
            } else {
                &view.target.service_version
            },
            view.method().unwrap_or("-")
        )
    }

    fn caller_timeout(request: &dubbo::Frame, limits: &Limits) -> Option<Duration> {
        // The `timeout` attachment a Dubbo consumer sends (the channel sends the time left).
        dubbo::request_timeout(request, limits)
    }

    fn error_answer(request: &dubbo::Frame, error: &ProxyError) -> dubbo::Frame {
        request.error_response(
            status(error.cause()),
            &error_marker(error.cause(), error.message()),
        )
    }

    fn payload_len(frame: &Self::Frame) -> usize {
        frame.body.len()
    }

    fn pool(host: &Host) -> Option<&MuxPool<Dubbo>> {
        match &host.pool {
            UpstreamPool::Dubbo(pool) => Some(pool),
            _ => None,
        }
    }
}

/// The Dubbo status of the proxy's own answer.
pub(crate) fn status(cause: Cause) -> u8 {
    match cause {
        Cause::NoRoute => dubbo::status::SERVICE_NOT_FOUND,
        Cause::Overflow | Cause::BadRequest => dubbo::status::BAD_REQUEST,
        Cause::Timeout => dubbo::status::CLIENT_TIMEOUT,
        Cause::ConnectFailure | Cause::Reset => dubbo::status::SERVICE_ERROR,
        Cause::NoHealthyHost => dubbo::status::SERVER_ERROR,
        Cause::Denied => dubbo::status::SERVICE_ERROR,
        Cause::CircuitOpen | Cause::RateLimited => dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use outrigger_codec::hessian::Writer;

    use super::*;
    use crate::route::Matcher;

    fn matcher(json: &str) -> Matcher {
        Matcher::compile(&serde_json::from_str(json).expect("json")).expect("compiles")
    }

    fn call(method: &str, args: Vec<Value>, desc: &str) -> dubbo::Frame {
        let inv = dubbo::RpcInvocation {
            dubbo_version: "2.0.2".into(),
            service_path: "org.apache.dubbo.samples.api.GreetingsService".into(),
            service_version: "1.0.0".into(),
            method: method.into(),
            parameter_types_desc: desc.into(),
            args,
            attachments: vec![
                ("group".into(), Value::string("blue")),
                ("timeout".into(), Value::Int(300)),
            ],
        };
        dubbo::Frame::request(7, inv.encode())
    }

    #[test]
    fn routes_see_service_version_method_and_attachments() {
        let limits = Limits::default();
        let plain = call("sayHello", vec![Value::string("w")], "Ljava/lang/String;");
        let generic = dubbo::Frame::request(
            8,
            dubbo::RpcInvocation::generic(
                "org.apache.dubbo.samples.api.GreetingsService",
                "1.0.0",
                "sayHello",
                &["java.lang.String".to_owned()],
                vec![Value::string("w")],
            )
            .encode(),
        );
        let cases: &[(&str, &dubbo::Frame, bool)] = &[
            ("{}", &plain, true),
            (
                r#"{"headers":[{"name":"service","exact":"org.apache.dubbo.samples.api.GreetingsService"}]}"#,
                &plain,
                true,
            ),
            (
                r#"{"headers":[{"name":"id","prefix":"org.apache."}]}"#,
                &plain,
                true,
            ),
            (r#"{"method":"sayHello"}"#, &plain, true),
            (r#"{"method":"sayHello"}"#, &generic, true),
            (r#"{"method":"$invoke"}"#, &generic, false),
            (
                r#"{"headers":[{"name":"version","exact":"1.0.0"}]}"#,
                &plain,
                true,
            ),
            (
                r#"{"headers":[{"name":"group","exact":"blue"}]}"#,
                &plain,
                true,
            ),
            (
                r#"{"headers":[{"name":"timeout","exact":"300"}]}"#,
                &plain,
                true,
            ),
            (
                r#"{"headers":[{"name":"generic","exact":"true"}]}"#,
                &generic,
                true,
            ),
            (
                r#"{"headers":[{"name":"group","exact":"green"}]}"#,
                &plain,
                false,
            ),
            (r#"{"path":"/"}"#, &plain, false),
        ];
        for (json, frame, want) in cases {
            let view = Dubbo::view(frame, &limits).expect("view");
            assert_eq!(
                matcher(json).matches_view(&view),
                *want,
                "{json} vs {}",
                Dubbo::describe(&view)
            );
        }
    }

    #[test]
    fn the_callers_timeout_attachment_bounds_the_exchange() {
        let limits = Limits::default();
        let with = call("sayHello", vec![Value::string("w")], "Ljava/lang/String;");
        assert_eq!(
            Dubbo::caller_timeout(&with, &limits),
            Some(Duration::from_millis(300))
        );
        let generic = dubbo::Frame::request(
            8,
            dubbo::RpcInvocation::generic("S", "", "m", &[], vec![]).encode(),
        );
        assert_eq!(Dubbo::caller_timeout(&generic, &limits), None);
    }

    #[test]
    fn a_body_that_is_not_hessian_is_a_bad_request() {
        let mut w = Writer::new();
        w.write_int(5);
        let frame = dubbo::Frame::request(1, w.finish());
        assert!(Dubbo::view(&frame, &Limits::default()).is_err());
    }

    #[test]
    fn proxy_errors_use_dubbo_statuses_and_markers() {
        let req = call("sayHello", vec![], "");
        for (cause, want) in [
            (Cause::NoRoute, 60),
            (Cause::Overflow, 40),
            (Cause::BadRequest, 40),
            (Cause::Timeout, 30),
            (Cause::Reset, 70),
            (Cause::ConnectFailure, 70),
            (Cause::NoHealthyHost, 80),
            (Cause::CircuitOpen, 100),
            (Cause::RateLimited, 100),
        ] {
            let answer = Dubbo::error_answer(&req, &ProxyError::new(cause, "why"));
            assert_eq!(answer.status, want);
            assert_eq!(answer.request_id, 7);
            let dubbo::Reply::Error { message, .. } =
                dubbo::Reply::decode(&answer, &Limits::default()).expect("decodes")
            else {
                panic!("an error reply");
            };
            assert_eq!(
                outrigger_core::parse_error_marker(&message),
                Some((cause, "why"))
            );
        }
    }
}
