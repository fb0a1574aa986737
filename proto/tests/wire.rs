//! Pins the wire format of service invocation: Layotto's and Dapr's messages
//! must encode to the same bytes, field numbers included, so one runtime can
//! serve both APIs with one code path.

use prost::Message;
use prost_types::Any;

use outrigger_proto::dapr::proto::common::v1 as dapr_common;
use outrigger_proto::dapr::proto::runtime::v1 as dapr;
use outrigger_proto::spec::proto::runtime::v1 as layotto;

/// `InvokeServiceRequest { id: "app", message: { method: "hello",
/// data: Any { value: "hi" }, content_type: "text/plain",
/// http_extension: { verb: POST, querystring: "a=1" } } }`, encoded by hand.
#[rustfmt::skip]
const INVOKE_SERVICE_REQUEST: &[u8] = &[
    0x0a, 0x03, b'a', b'p', b'p',                                           // 1: id
    0x1a, 0x22,                                                             // 3: message, 34 bytes
    0x0a, 0x05, b'h', b'e', b'l', b'l', b'o',                               //   1: method
    0x12, 0x04, 0x12, 0x02, b'h', b'i',                                     //   2: data, Any { 2: value }
    0x1a, 0x0a, b't', b'e', b'x', b't', b'/', b'p', b'l', b'a', b'i', b'n', //   3: content_type
    0x22, 0x07,                                                             //   4: http_extension, 7 bytes
    0x08, 0x03,                                                             //     1: verb = POST
    0x12, 0x03, b'a', b'=', b'1',                                           //     2: querystring
];

/// `InvokeResponse { data: Any { value: "ok" }, content_type: "text/plain" }`.
#[rustfmt::skip]
const INVOKE_RESPONSE: &[u8] = &[
    0x0a, 0x04, 0x12, 0x02, b'o', b'k',                                     // 1: data, Any { 2: value }
    0x12, 0x0a, b't', b'e', b'x', b't', b'/', b'p', b'l', b'a', b'i', b'n', // 2: content_type
];

fn payload(value: &'static [u8]) -> Option<Any> {
    Some(Any {
        type_url: String::new(),
        value: value.to_vec(),
    })
}

fn layotto_request() -> layotto::InvokeServiceRequest {
    layotto::InvokeServiceRequest {
        id: "app".to_owned(),
        message: Some(layotto::CommonInvokeRequest {
            method: "hello".to_owned(),
            data: payload(b"hi"),
            content_type: "text/plain".to_owned(),
            http_extension: Some(layotto::HttpExtension {
                verb: layotto::http_extension::Verb::Post.into(),
                querystring: "a=1".to_owned(),
            }),
        }),
    }
}

fn dapr_request() -> dapr::InvokeServiceRequest {
    dapr::InvokeServiceRequest {
        id: "app".to_owned(),
        message: Some(dapr_common::InvokeRequest {
            method: "hello".to_owned(),
            data: payload(b"hi"),
            content_type: "text/plain".to_owned(),
            http_extension: Some(dapr_common::HttpExtension {
                verb: dapr_common::http_extension::Verb::Post.into(),
                querystring: "a=1".to_owned(),
            }),
        }),
    }
}

#[test]
fn invoke_service_request_encodes_to_the_same_bytes() {
    assert_eq!(layotto_request().encode_to_vec(), INVOKE_SERVICE_REQUEST);
    assert_eq!(dapr_request().encode_to_vec(), INVOKE_SERVICE_REQUEST);
}

#[test]
fn layotto_request_decodes_as_dapr_and_back() {
    let bytes = layotto_request().encode_to_vec();
    let as_dapr = dapr::InvokeServiceRequest::decode(bytes.as_slice());
    assert_eq!(as_dapr.ok(), Some(dapr_request()));

    let bytes = dapr_request().encode_to_vec();
    let as_layotto = layotto::InvokeServiceRequest::decode(bytes.as_slice());
    assert_eq!(as_layotto.ok(), Some(layotto_request()));
}

#[test]
fn invoke_response_encodes_to_the_same_bytes() {
    let layotto = layotto::InvokeResponse {
        data: payload(b"ok"),
        content_type: "text/plain".to_owned(),
    };
    let dapr = dapr_common::InvokeResponse {
        data: payload(b"ok"),
        content_type: "text/plain".to_owned(),
    };
    assert_eq!(layotto.encode_to_vec(), INVOKE_RESPONSE);
    assert_eq!(dapr.encode_to_vec(), INVOKE_RESPONSE);
}

#[test]
fn http_verbs_have_the_same_numbers() {
    use dapr_common::http_extension::Verb as DaprVerb;
    use layotto::http_extension::Verb as LayottoVerb;

    let names = [
        "NONE", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    for (number, name) in (0..).zip(names) {
        let layotto = LayottoVerb::try_from(number).map(|verb| verb.as_str_name());
        let dapr = DaprVerb::try_from(number).map(|verb| verb.as_str_name());
        assert_eq!(layotto, Ok(name), "Layotto verb {number}");
        assert_eq!(dapr, Ok(name), "Dapr verb {number}");
    }
    assert!(LayottoVerb::try_from(10).is_err());
    assert!(DaprVerb::try_from(10).is_err());
}

#[test]
fn say_hello_field_numbers() {
    let request = layotto::SayHelloRequest {
        service_name: "s".to_owned(),
        name: "n".to_owned(),
        data: payload(b"d"),
    };
    let response = layotto::SayHelloResponse {
        hello: "h".to_owned(),
        data: payload(b"d"),
    };
    let request_bytes: &[u8] = &[
        0x0a, 0x01, b's', // 1: service_name
        0x12, 0x01, b'n', // 2: name
        0x1a, 0x03, 0x12, 0x01, b'd', // 3: data, Any { 2: value }
    ];
    let response_bytes: &[u8] = &[
        0x0a, 0x01, b'h', // 1: hello
        0x12, 0x03, 0x12, 0x01, b'd', // 2: data, Any { 2: value }
    ];
    assert_eq!(request.encode_to_vec(), request_bytes);
    assert_eq!(response.encode_to_vec(), response_bytes);
}
