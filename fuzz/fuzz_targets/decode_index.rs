//! The index decoder on arbitrary bytes, both as found (header checks) and wrapped in a valid
//! header with the right checksum (so the fuzzer reaches bincode and the structural checks).
#![no_main]

use av1pack::archive::codec::{decode_index, encode_index, FORMAT_VERSION, MAGIC};
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64;

fuzz_target!(|data: &[u8]| {
    let _ = decode_index(data);
    let mut framed = Vec::with_capacity(28 + data.len());
    framed.extend_from_slice(MAGIC);
    framed.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    framed.extend_from_slice(&(data.len() as u64).to_le_bytes());
    framed.extend_from_slice(&xxh3_64(data).to_le_bytes());
    framed.extend_from_slice(data);
    if let Ok(index) = decode_index(&framed) {
        // What decodes must encode again, and that must decode and encode to the same bytes.
        let again = encode_index(&index).expect("a decoded index encodes");
        let back = decode_index(&again).expect("re-encoded index decodes");
        assert!(encode_index(&back).expect("encodes") == again);
    }
});
