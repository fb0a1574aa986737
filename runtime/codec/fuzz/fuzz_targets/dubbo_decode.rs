//! Dubbo framing and body parsing on arbitrary bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use outrigger_codec::dubbo::{self, Reply, RpcInvocation, Target};
use outrigger_codec::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = dubbo::decode(&mut buf, &limits) {
        assert!(frame.encoded_len() <= data.len());
        let _ = Target::decode(&frame, &limits);
        let _ = RpcInvocation::decode(&frame, &limits);
        let _ = Reply::decode(&frame, &limits);
    }
    // The bytes as a body, whatever the header would have said.
    let frame = dubbo::Frame::request(0, Bytes::copy_from_slice(data));
    if let Ok(inv) = RpcInvocation::decode(&frame, &limits) {
        let again = dubbo::Frame::request(0, inv.encode());
        assert!(RpcInvocation::decode(&again, &limits).is_ok());
    }
    let _ = Reply::decode(&frame, &limits);
});
