//! The HTTP/1.1 request reader on arbitrary bytes (request line, headers, content-length and
//! chunked bodies, pipelining): every request it returns respects the head and body limits, and
//! anything else ends in a clear status (400/413/431/…) or a closed connection.
#![no_main]

use futures_lite::future::block_on;
use libfuzzer_sys::fuzz_target;
use spectra_transport::http::{MAX_HEAD, ReadError, Reader};

const MAX_BODY: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut reader = Reader::new(futures_lite::io::Cursor::new(data.to_vec()));
    block_on(async {
        for _ in 0..16 {
            match reader.read_request(MAX_BODY).await {
                Ok(req) => {
                    assert!(req.body.len() <= MAX_BODY);
                    assert!(req.method.len() + req.path.len() + req.query.len() <= MAX_HEAD);
                }
                Err(ReadError::Bad(status, _)) => {
                    assert!((400..=505).contains(&status), "status {status}");
                    return;
                }
                Err(ReadError::Closed) => return,
            }
        }
    });
});
