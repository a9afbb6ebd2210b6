//! Any bytes an appliance may send a client: response decoding must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trove_common::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = wire::decode_response(data) {
        let mut out = Vec::new();
        wire::encode_response(&resp, &mut out);
        assert_eq!(wire::decode_response(&out[wire::LEN_PREFIX_BYTES..]).as_ref(), Ok(&resp));
    }
    if data.len() >= wire::SERVER_HELLO_BYTES {
        let _ = wire::decode_server_hello(data[..wire::SERVER_HELLO_BYTES].try_into().unwrap());
    }
});
