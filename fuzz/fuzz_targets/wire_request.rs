//! Any bytes a client may send an appliance: framing and request decoding must never panic,
//! and whatever decodes must re-encode to the same bytes (one message, one encoding).
#![no_main]
use libfuzzer_sys::fuzz_target;
use trove_common::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, body, used))) = wire::split_request_frame(data) {
        assert!(used <= data.len());
        assert_eq!(body.len(), req.body_len() as usize);
        let mut out = Vec::new();
        wire::encode_request(&req, &mut out);
        assert_eq!(&out[..], &data[..out.len()]);
    }
    let _ = wire::decode_request(data);
    if data.len() >= wire::CLIENT_HELLO_BYTES {
        let _ = wire::decode_client_hello(data[..wire::CLIENT_HELLO_BYTES].try_into().unwrap());
    }
});
