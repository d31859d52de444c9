//! Kernel TLS (kTLS): a handed-off TLS 1.3 connection's records given to the kernel, so a
//! delivery is a plain `send` of the frame (the kernel seals it) and a read returns plaintext.
//! Used where the kernel has the `tls` upper-layer protocol and the server was started with it
//! on (`set_enabled`, after `tls::kernel_tls` found it); every connection whose setup fails, or
//! that is not TLS 1.3, stays with the records sealed in user space (`handoff::Sealed`).
//!
//! Owns: the kernel's ABI for it (`TCP_ULP` "tls", `SOL_TLS`, `TLS_TX`/`TLS_RX` and their
//! `tls12_crypto_info_*` structures, the record type of a `sendmsg`). Must not touch: key
//! derivation or sequence numbers (`records`), the connection's buffers (`handoff`).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// `SOL_TLS` (linux/socket.h) and the options under it (linux/tls.h).
const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
/// A `sendmsg` control message giving the record's content type.
const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;
/// The alert record type and a close_notify (level warning, description close_notify).
const ALERT: u8 = 21;
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the hand-off to the kernel on or off for connections handed off from now on (the
/// server turns it on at start when the kernel has it and the operator did not turn it off).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A direction's cipher, key, static IV and next record's sequence number, as the kernel
/// takes them.
pub(crate) struct KernelKey<'a> {
    pub cipher: Cipher,
    pub key: &'a [u8],
    pub iv: &'a [u8; 12],
    pub seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// `struct tls12_crypto_info_*` for TLS 1.3 (used for both versions): the `tls_crypto_info`
/// header (version, cipher type), then iv, key, salt, rec_seq. For AES-GCM the 12-byte IV is
/// split: its first 4 bytes are the salt, its last 8 the iv; ChaCha20-Poly1305 takes all 12 as
/// the iv and has no salt.
pub(crate) fn crypto_info(k: &KernelKey<'_>) -> io::Result<Vec<u8>> {
    let (cipher, key_len) = match k.cipher {
        Cipher::Aes128Gcm => (TLS_CIPHER_AES_GCM_128, 16),
        Cipher::Aes256Gcm => (TLS_CIPHER_AES_GCM_256, 32),
        Cipher::Chacha20Poly1305 => (TLS_CIPHER_CHACHA20_POLY1305, 32),
    };
    if k.key.len() != key_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a key of the wrong length",
        ));
    }
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&TLS_1_3_VERSION.to_ne_bytes());
    info.extend_from_slice(&cipher.to_ne_bytes());
    match k.cipher {
        Cipher::Aes128Gcm | Cipher::Aes256Gcm => {
            info.extend_from_slice(&k.iv[4..]);
            info.extend_from_slice(k.key);
            info.extend_from_slice(&k.iv[..4]);
        }
        Cipher::Chacha20Poly1305 => {
            info.extend_from_slice(k.iv);
            info.extend_from_slice(k.key);
        }
    }
    info.extend_from_slice(&k.seq.to_be_bytes());
    Ok(info)
}

/// Attaches the `tls` upper-layer protocol to the connected TCP socket `fd`.
pub(crate) fn attach(fd: RawFd) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: `fd` is an open socket; the option value is `name`'s 3 bytes, valid for the call.
    let got = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if got == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the kernel one direction's key (`attach` first): from here on it seals what is sent
/// (`tx`) or opens what is received.
pub(crate) fn set_key(fd: RawFd, tx: bool, key: &KernelKey<'_>) -> io::Result<()> {
    let mut info = crypto_info(key)?;
    // SAFETY: `fd` is an open socket; the option value is `info`'s bytes, valid for the call.
    let got = unsafe {
        libc::setsockopt(
            fd,
            SOL_TLS,
            if tx { TLS_TX } else { TLS_RX },
            info.as_ptr().cast(),
            info.len() as libc::socklen_t,
        )
    };
    // The key is not left behind in freed memory (best effort).
    for b in info.iter_mut() {
        // SAFETY: a valid, aligned pointer to a byte of `info`.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    if got == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends a close_notify alert on a socket whose sending side the kernel seals (without
/// blocking: a full socket gets none, as a connection the peer stopped reading deserves).
pub(crate) fn send_close_notify(fd: RawFd) -> io::Result<()> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    let mut control = vec![0u8; space];
    let mut payload = CLOSE_NOTIFY;
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: a zeroed msghdr is valid; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, large enough for one header and one byte of data
    // (CMSG_SPACE(1)), so the first header and its data are inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no room for a control message"));
        }
        (*cmsg).cmsg_level = SOL_TLS;
        (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = ALERT;
    }
    // SAFETY: `fd` is an open socket and `msg` points at live buffers for the call.
    let sent = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts of linux/tls.h: `tls12_crypto_info_aes_gcm_128` is 40 bytes, the 256-bit and
    /// ChaCha20-Poly1305 ones 56; the salt is the IV's first 4 bytes for AES-GCM.
    #[test]
    fn crypto_info_has_the_kernel_layout() {
        let iv: [u8; 12] = std::array::from_fn(|i| i as u8 + 1);
        let key16 = [0xAAu8; 16];
        let key32 = [0xBBu8; 32];
        let aes128 = crypto_info(&KernelKey {
            cipher: Cipher::Aes128Gcm,
            key: &key16,
            iv: &iv,
            seq: 0x0102_0304_0506_0708,
        })
        .expect("info");
        assert_eq!(aes128.len(), 40);
        assert_eq!(&aes128[..4], &[0x04, 0x03, 51, 0]); // little-endian u16s
        assert_eq!(&aes128[4..12], &iv[4..]);
        assert_eq!(&aes128[12..28], &key16);
        assert_eq!(&aes128[28..32], &iv[..4]);
        assert_eq!(&aes128[32..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let aes256 = crypto_info(&KernelKey {
            cipher: Cipher::Aes256Gcm,
            key: &key32,
            iv: &iv,
            seq: 1,
        })
        .expect("info");
        assert_eq!(aes256.len(), 56);
        assert_eq!(&aes256[44..48], &iv[..4]);
        let chacha = crypto_info(&KernelKey {
            cipher: Cipher::Chacha20Poly1305,
            key: &key32,
            iv: &iv,
            seq: 1,
        })
        .expect("info");
        assert_eq!(chacha.len(), 56);
        assert_eq!(&chacha[4..16], &iv);
        assert!(
            crypto_info(&KernelKey {
                cipher: Cipher::Aes256Gcm,
                key: &key16,
                iv: &iv,
                seq: 0,
            })
            .is_err()
        );
    }
}
