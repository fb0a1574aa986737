//! Bolt framing on arbitrary bytes: decode every frame, never claim more bytes than given,
//! and re-encode what was decoded to the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use outrigger_codec::{Limits, bolt};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut buf = BytesMut::from(data);
    let mut offset = 0;
    loop {
        let before = buf.len();
        let Ok(Some(frame)) = bolt::decode(&mut buf, &limits) else {
            break;
        };
        let consumed = before - buf.len();
        assert!(offset + consumed <= data.len());
        assert!(frame.encoded_len() <= consumed);
        let mut out = BytesMut::new();
        bolt::encode(&frame, &mut out).expect("a decoded frame re-encodes");
        // Header entries with a null key are dropped on decode (as SOFA's Java decoder does);
        // when none were, re-encoding gives back exactly the input.
        if out.len() == consumed {
            assert_eq!(&out[..], &data[offset..offset + consumed]);
        }
        offset += consumed;
    }
    let mut scratch = data.to_vec();
    let _ = bolt::set_request_id(&mut scratch, 1);
});
