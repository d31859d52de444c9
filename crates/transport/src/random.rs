//! Random identifiers (group secrets, session ids, access keys, preview codes).

use rand::Rng;

/// `len` characters drawn uniformly from `alphabet` with the thread's CSPRNG.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// The base64url alphabet of Engine.IO / Socket.IO ids.
pub const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[cfg(test)]
mod tests {
    #[test]
    fn draws_from_the_alphabet() {
        let s = super::random_string(b"AB", 64);
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| b == b'A' || b == b'B'));
    }
}
