//! Fuzz target: the photo checks on arbitrary bytes (`ringfence::photo::assess`: size and format
//! checks, JPEG/PNG decoding within the pixel limits, face detection, quality measures), as a
//! till's upload reaches them. Inputs are bounded by the server's own limit, which `assess`
//! enforces. Any panic is a bug, including one inside the face detector that the server would
//! catch: libFuzzer's panic hook aborts on it, so it is found here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringfence::photo;

fuzz_target!(|bytes: &[u8]| {
    match photo::assess(bytes) {
        Ok(verification) => {
            let _ = serde_json::to_string(&verification);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
