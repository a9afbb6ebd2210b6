//! Any bytes a client may send an appliance: framing and request decoding must never panic,
//! and whatever decodes must survive re-encoding unchanged. (Not byte-identical: postcard
//! accepts non-minimal varints, e.g. `99 00` for 25, which the fuzzer found. That is harmless
//! because nothing signs wire bytes; grants sign fixed-width fields.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use trove_common::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, body, used))) = wire::split_request_frame(data) {
        assert!(used <= data.len());
        assert_eq!(body.len(), req.body_len() as usize);
        let mut out = Vec::new();
        wire::encode_request(&req, &mut out);
        assert_eq!(wire::decode_request(&out[wire::LEN_PREFIX_BYTES..]).as_ref(), Ok(&req));
    }
    let _ = wire::decode_request(data);
    if data.len() >= wire::CLIENT_HELLO_BYTES {
        let _ = wire::decode_client_hello(data[..wire::CLIENT_HELLO_BYTES].try_into().unwrap());
    }
});
