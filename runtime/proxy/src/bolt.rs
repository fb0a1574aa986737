//! Bolt in the proxy core: what routes see of a Bolt request (its header map, plus `service`
//! from `service` or `sofa_head_target_service`, `method` from `sofa_head_method_name` — or,
//! when a client sends no such header, the Hessian `SofaRequest`'s `methodName`, decoded only
//! when a matcher asks — and `id` = the service), the caller's timeout from the frame, and the proxy's own answers in
//! SOFABolt's status codes (no route or no healthy host → 6 NO_PROCESSOR, overflow, an open
//! circuit breaker or a rate limit → 4 SERVER_THREADPOOL_BUSY, timeout → 7 TIMEOUT, connect failure or reset → 5 ERROR_COMM, a
//! malformed request → 9 CODEC_EXCEPTION), marked with `x-outrigger-error` and
//! `x-outrigger-message` headers and an empty content. Not for serving connections (see
//! `xproto`).

use std::{cell::OnceCell, time::Duration};

use outrigger_codec::{Limits, bolt};
use outrigger_config::Protocol;

use outrigger_core::{Cause, ERROR_HEADER, ERROR_MESSAGE_HEADER, Failure, ProxyError};
use outrigger_pool::{Bolt, MuxPool};

use crate::{
    cluster::{Host, UpstreamPool},
    route::RequestView,
    xproto::ServerProtocol,
};

/// A Bolt request as routes see it.
pub(crate) struct BoltView<'a> {
    frame: &'a bolt::Frame,
    /// The method in the content, decoded the first time a matcher asks for a method the
    /// headers do not carry (sofa-rpc-node sends none).
    content_method: OnceCell<Option<String>>,
}

impl BoltView<'_> {
    fn service(&self) -> Option<&str> {
        bolt::sofa::service(&self.frame.headers)
    }
}

impl RequestView for BoltView<'_> {
    fn protocol(&self) -> Protocol {
        Protocol::Bolt
    }

    fn method(&self) -> Option<&str> {
        bolt::sofa::method(&self.frame.headers).or_else(|| {
            self.content_method
                .get_or_init(|| bolt::sofa::content_method(self.frame))
                .as_deref()
        })
    }

    fn path(&self) -> Option<&str> {
        None
    }

    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        match name {
            "service" | "id" => self.service().is_some_and(pred),
            "method" => self.method().is_some_and(pred),
            _ => self.frame.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case(name.as_bytes())
                    && v.and_then(|v| std::str::from_utf8(v).ok())
                        .is_some_and(&mut *pred)
            }),
        }
    }
}

impl ServerProtocol for Bolt {
    type View<'a> = BoltView<'a>;

    fn view<'a>(request: &'a bolt::Frame, _: &'a Limits) -> Result<BoltView<'a>, String> {
        Ok(BoltView {
            frame: request,
            content_method: OnceCell::new(),
        })
    }

    fn describe(view: &BoltView<'_>) -> String {
        format!(
            "bolt service={} method={}",
            view.service().unwrap_or("-"),
            view.method().unwrap_or("-")
        )
    }

    fn caller_timeout(request: &bolt::Frame, _: &Limits) -> Option<Duration> {
        request.timeout()
    }

    fn error_answer(request: &bolt::Frame, error: &ProxyError) -> bolt::Frame {
        let mut answer = request.response(status(error.cause()));
        answer.headers.insert(ERROR_HEADER, error.cause().as_str());
        answer.headers.insert(
            ERROR_MESSAGE_HEADER,
            bounded(error.message(), MAX_ERROR_MESSAGE)
                .as_bytes()
                .to_vec(),
        );
        answer
    }

    fn payload_len(frame: &Self::Frame) -> usize {
        frame.content.len()
    }

    fn pool(host: &Host) -> Option<&MuxPool<Bolt>> {
        match &host.pool {
            UpstreamPool::Bolt(pool) => Some(pool),
            _ => None,
        }
    }
}

/// The longest error message put in a Bolt answer's header map (whose fields have 16-bit
/// lengths in places); longer ones are cut at a character boundary.
const MAX_ERROR_MESSAGE: usize = 4096;

/// `s` cut to at most `max` bytes, at a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The Bolt status of the proxy's own answer.
pub(crate) fn status(cause: Cause) -> u16 {
    match cause {
        Cause::NoRoute | Cause::NoHealthyHost => bolt::status::NO_PROCESSOR,
        Cause::Overflow | Cause::CircuitOpen | Cause::RateLimited => {
            bolt::status::SERVER_THREADPOOL_BUSY
        }
        Cause::Timeout => bolt::status::TIMEOUT,
        Cause::ConnectFailure | Cause::Reset => bolt::status::ERROR_COMM,
        Cause::BadRequest => bolt::status::CODEC_EXCEPTION,
        Cause::Denied => bolt::status::SERVER_EXCEPTION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Matcher;

    fn request(headers: &[(&'static str, &'static str)]) -> bolt::Frame {
        let mut h = bolt::HeaderMap::new();
        for (k, v) in headers {
            h.push(*k, Some(bytes::Bytes::from_static(v.as_bytes())));
        }
        bolt::Frame::request(3, 700, "C", h, "x")
    }

    fn matcher(json: &str) -> Matcher {
        Matcher::compile(&serde_json::from_str(json).expect("json")).expect("compiles")
    }

    #[test]
    fn routes_see_service_method_and_headers() {
        let from_channel = request(&[
            ("service", "com.outrigger.test.EchoService:1.0"),
            (
                "sofa_head_target_service",
                "com.outrigger.test.EchoService:1.0",
            ),
            ("sofa_head_method_name", "hello"),
            ("x-tenant", "blue"),
        ]);
        let from_sofa_node = request(&[("service", "com.outrigger.test.EchoService:1.0")]);
        let protobuf_style = request(&[
            ("sofa_head_target_service", "com.other.Svc:1.0"),
            ("sofa_head_method_name", "get"),
        ]);
        let cases: &[(&str, &bolt::Frame, bool)] = &[
            ("{}", &from_sofa_node, true),
            (
                r#"{"headers":[{"name":"service","prefix":"com.outrigger."}]}"#,
                &from_sofa_node,
                true,
            ),
            (
                r#"{"headers":[{"name":"id","exact":"com.outrigger.test.EchoService:1.0"}]}"#,
                &from_channel,
                true,
            ),
            (r#"{"method":"hello"}"#, &from_channel, true),
            (r#"{"method":"hello"}"#, &from_sofa_node, false),
            (
                r#"{"headers":[{"name":"method","regex":"h.*"}]}"#,
                &from_channel,
                true,
            ),
            (
                r#"{"headers":[{"name":"X-Tenant","exact":"blue"}]}"#,
                &from_channel,
                true,
            ),
            (
                r#"{"headers":[{"name":"x-tenant","exact":"blue"}]}"#,
                &from_sofa_node,
                false,
            ),
            (
                r#"{"headers":[{"name":"service","exact":"com.other.Svc:1.0"}],"method":"get"}"#,
                &protobuf_style,
                true,
            ),
            (r#"{"pathPrefix":"/"}"#, &from_channel, false),
            (r#"{"method":"GET"}"#, &from_channel, false),
        ];
        for (json, frame, want) in cases {
            let view = BoltView {
                frame,
                content_method: OnceCell::new(),
            };
            assert_eq!(
                matcher(json).matches_view(&view),
                *want,
                "{json} vs {}",
                Bolt::describe(&view)
            );
        }
    }

    #[test]
    fn proxy_errors_use_bolt_statuses_and_markers() {
        let req = request(&[]);
        for (cause, want) in [
            (Cause::NoRoute, 6),
            (Cause::NoHealthyHost, 6),
            (Cause::Overflow, 4),
            (Cause::Timeout, 7),
            (Cause::ConnectFailure, 5),
            (Cause::Reset, 5),
            (Cause::BadRequest, 9),
            (Cause::CircuitOpen, 4),
            (Cause::RateLimited, 4),
        ] {
            let answer = Bolt::error_answer(&req, &ProxyError::new(cause, "why"));
            assert_eq!(answer.kind, bolt::Kind::Response { status: want });
            assert_eq!(answer.request_id, 3);
            assert_eq!(answer.headers.get_str(ERROR_HEADER), Some(cause.as_str()));
            assert_eq!(answer.headers.get_str(ERROR_MESSAGE_HEADER), Some("why"));
            assert!(answer.content.is_empty());
        }
        assert_eq!(
            Bolt::caller_timeout(&req, &Limits::default()),
            Some(Duration::from_millis(700))
        );
        // A huge message (a long upstream error, say) still makes an encodable answer.
        let long = "é".repeat(60 * 1024);
        let answer = Bolt::error_answer(&req, &ProxyError::new(Cause::Reset, long));
        let message = answer
            .headers
            .get_str(ERROR_MESSAGE_HEADER)
            .expect("message");
        assert!(message.len() <= MAX_ERROR_MESSAGE && message.starts_with("éé"));
        let mut buf = bytes::BytesMut::new();
        bolt::encode(&answer, &mut buf).expect("encodable");
        assert_eq!(
            Bolt::caller_timeout(&bolt::Frame::heartbeat(1), &Limits::default()),
            None
        );
    }
}
