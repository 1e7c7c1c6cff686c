//! Content-Encoding of the bodies the host must read or rewrite: which encoding a message
//! declares, decoding it under a size limit, and encoding it again.
//!
//! - [`Encoding::from_headers`] reads `Content-Encoding`. One encoding is supported per message:
//!   `identity` (or no header), `gzip` (also `x-gzip`), `deflate` and `br`. Stacked encodings
//!   (`gzip, br`) and anything else are refused: the caller fails closed rather than pass a body
//!   it cannot inspect.
//! - [`decode`] never produces more than `limit` bytes: it stops reading at `limit + 1` and
//!   answers [`CodecError::TooLarge`], so a compression bomb cannot exhaust memory. A truncated
//!   stream, a bad checksum or bytes after the end of the stream are [`CodecError::Corrupt`]. An
//!   empty body decodes to an empty body whatever its declared encoding (`HEAD`, `204` and `304`
//!   responses often declare one). HTTP `deflate` is the zlib format (RFC 9110); raw deflate,
//!   which some servers send instead, is accepted too.
//! - [`encode`] writes the same encoding back: gzip and zlib at level 6, brotli at quality 5
//!   (quality 11, the library default, costs tens of milliseconds per MiB on the response path).
use std::fmt;
use std::io::{Read, Write};

use bytes::Bytes;
use flate2::{Compression, Decompress, FlushDecompress, Status};

/// Quality of brotli re-encoding: fast enough for the response path, close to gzip -9 in size.
const BROTLI_QUALITY: u32 = 5;
/// Brotli window (log2 of bytes).
const BROTLI_WINDOW: u32 = 22;
/// Buffer size handed to the brotli reader and writer.
const BROTLI_BUFFER: usize = 64 * 1024;

/// A body's Content-Encoding, as far as the host can decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No encoding (no header, or `identity`).
    Identity,
    /// `gzip` (RFC 1952); `x-gzip` is read as the same.
    Gzip,
    /// `deflate`: the zlib format (RFC 1950); raw deflate is accepted when decoding.
    Deflate,
    /// `br`: brotli (RFC 7932).
    Br,
}

impl Encoding {
    /// The encoding the headers declare: no `Content-Encoding` (or `identity`) is
    /// [`Encoding::Identity`]; `gzip`/`x-gzip`, `deflate` and `br` are themselves (in any
    /// case). Several encodings stacked, in one header or several, and any other name are
    /// [`CodecError::Unsupported`].
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Encoding, CodecError> {
        let mut found: Option<Encoding> = None;
        let mut names: Vec<String> = Vec::new();
        for value in headers.get_all(http::header::CONTENT_ENCODING) {
            let Ok(value) = value.to_str() else {
                return Err(CodecError::Unsupported(
                    "(a value that is not ASCII)".to_owned(),
                ));
            };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                names.push(name.to_ascii_lowercase());
            }
        }
        for name in &names {
            let encoding = match name.as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Encoding::Gzip,
                "deflate" => Encoding::Deflate,
                "br" => Encoding::Br,
                _ => return Err(CodecError::Unsupported(bounded_name(name))),
            };
            if found.is_some() {
                return Err(CodecError::Unsupported(bounded_name(&names.join(", "))));
            }
            found = Some(encoding);
        }
        Ok(found.unwrap_or(Encoding::Identity))
    }

    /// The `Content-Encoding` token of this encoding (`identity` for none).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Br => "br",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a body could not be decoded or encoded. Never carries body bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A Content-Encoding the host does not decode, or several stacked.
    #[error("unsupported Content-Encoding {0:?}")]
    Unsupported(String),
    /// The decoded body would be larger than the limit.
    #[error("decoded body larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The body is not valid in its declared encoding (bad data, checksum, truncation).
    #[error("body is not valid {encoding} data")]
    Corrupt {
        /// The encoding the body claimed.
        encoding: Encoding,
    },
    /// Encoding failed (writing to memory; not expected to happen).
    #[error("{encoding} encoding failed")]
    Encode {
        /// The encoding being written.
        encoding: Encoding,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}

/// Decode `body` from `encoding`, refusing to produce more than `limit` bytes.
pub fn decode(encoding: Encoding, body: &[u8], limit: usize) -> Result<Bytes, CodecError> {
    if body.is_empty() {
        return Ok(Bytes::new());
    }
    let decoded = match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(CodecError::TooLarge { limit });
            }
            body.to_vec()
        }
        Encoding::Gzip => read_limited(flate2::read::MultiGzDecoder::new(body), encoding, limit)?,
        Encoding::Deflate => inflate_either(body, limit)?,
        Encoding::Br => unbrotli(body, limit)?,
    };
    Ok(Bytes::from(decoded))
}

/// Encode `body` in `encoding`.
pub fn encode(encoding: Encoding, body: &[u8]) -> Result<Bytes, CodecError> {
    let failed = |source| CodecError::Encode { encoding, source };
    let encoded = match encoding {
        Encoding::Identity => body.to_vec(),
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4 + 64),
                Compression::default(),
            );
            w.write_all(body).map_err(failed)?;
            w.finish().map_err(failed)?
        }
        Encoding::Deflate => {
            let mut w = flate2::write::ZlibEncoder::new(
                Vec::with_capacity(body.len() / 4 + 64),
                Compression::default(),
            );
            w.write_all(body).map_err(failed)?;
            w.finish().map_err(failed)?
        }
        Encoding::Br => {
            let mut w = brotli::CompressorWriter::new(
                Vec::with_capacity(body.len() / 4 + 64),
                BROTLI_BUFFER,
                BROTLI_QUALITY,
                BROTLI_WINDOW,
            );
            w.write_all(body).map_err(failed)?;
            w.flush().map_err(failed)?;
            w.into_inner()
        }
    };
    Ok(Bytes::from(encoded))
}

/// Read a decoder to its end, stopping at `limit + 1` bytes.
fn read_limited(
    reader: impl Read,
    encoding: Encoding,
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|_| CodecError::Corrupt { encoding })?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
}

/// Brotli through the writer API, which reports where the stream ends: the reader API
/// silently ignores bytes after the end of the stream.
fn unbrotli(body: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let failed = |sink: &LimitedSink| {
        if sink.overflowed {
            CodecError::TooLarge { limit }
        } else {
            CodecError::Corrupt {
                encoding: Encoding::Br,
            }
        }
    };
    let sink = LimitedSink {
        out: Vec::with_capacity(body.len().saturating_mul(4).min(limit)),
        limit,
        overflowed: false,
    };
    let mut w = brotli::DecompressorWriter::new(sink, BROTLI_BUFFER);
    let mut rest = body;
    while !rest.is_empty() {
        match w.write(rest) {
            // The stream ended before the input did.
            Ok(0) => return Err(failed(w.get_ref())),
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(_) => return Err(failed(w.get_ref())),
        }
    }
    // Closing fails when the stream is truncated.
    match w.into_inner() {
        Ok(sink) => Ok(sink.out),
        Err(sink) => Err(failed(&sink)),
    }
}

/// A `Write` into memory that refuses to hold more than `limit` bytes.
struct LimitedSink {
    out: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for LimitedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("decoded body over the limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// HTTP `deflate`: zlib when the body starts with a zlib header, raw deflate otherwise (and
/// when a body that looked like zlib does not decode as zlib).
fn inflate_either(body: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    if has_zlib_header(body) {
        match inflate(body, true, limit) {
            Err(CodecError::Corrupt { .. }) => {}
            other => return other,
        }
    }
    inflate(body, false, limit)
}

/// RFC 1950 header: method 8 (deflate), window at most 32 KiB, header checksum.
fn has_zlib_header(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Inflate the whole of `body` (zlib-wrapped or raw) into at most `limit` bytes. The stream
/// must end (a truncated stream is corrupt) and nothing may follow it.
fn inflate(body: &[u8], zlib: bool, limit: usize) -> Result<Vec<u8>, CodecError> {
    let corrupt = CodecError::Corrupt {
        encoding: Encoding::Deflate,
    };
    let ceiling = limit.saturating_add(1);
    let mut d = Decompress::new(zlib);
    let mut out: Vec<u8> = Vec::with_capacity(body.len().saturating_mul(4).max(64).min(ceiling));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= ceiling {
                return Err(CodecError::TooLarge { limit });
            }
            let grow = out.capacity().max(64).min(ceiling - out.len());
            out.reserve_exact(grow);
        }
        let consumed = usize::try_from(d.total_in()).map_err(|_| CodecError::Corrupt {
            encoding: Encoding::Deflate,
        })?;
        let input = body.get(consumed..).unwrap_or_default();
        let (in_before, out_before) = (d.total_in(), out.len());
        let status = d
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .map_err(|_| CodecError::Corrupt {
                encoding: Encoding::Deflate,
            })?;
        if out.len() > limit {
            return Err(CodecError::TooLarge { limit });
        }
        match status {
            Status::StreamEnd => {
                return if d.total_in() == body.len() as u64 {
                    Ok(out)
                } else {
                    Err(corrupt)
                };
            }
            Status::Ok | Status::BufError => {
                let stalled = d.total_in() == in_before && out.len() == out_before;
                if stalled && out.len() < out.capacity() {
                    // No progress with output room left: the input ended mid-stream.
                    return Err(corrupt);
                }
            }
        }
    }
}

/// An encoding name for an error message, cut to a sane length.
fn bounded_name(name: &str) -> String {
    name.chars().take(64).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, header::CONTENT_ENCODING};

    const ALL: [Encoding; 4] = [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Br,
    ];

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// The error of a decode that must fail (without printing a decoded body when it does not).
    fn decode_err(encoding: Encoding, body: &[u8], limit: usize) -> CodecError {
        match decode(encoding, body, limit) {
            Ok(b) => panic!("{encoding}: decoded {} bytes instead of failing", b.len()),
            Err(e) => e,
        }
    }

    fn sample() -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..5000 {
            body.extend_from_slice(format!("{{\"id\":{i},\"name\":\"item-{i}\"}},").as_bytes());
        }
        body
    }

    fn raw_deflate(body: &[u8]) -> Vec<u8> {
        let mut w = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        w.write_all(body).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn absent_or_identity_header_is_identity() {
        assert_eq!(
            Encoding::from_headers(&HeaderMap::new()).unwrap(),
            Encoding::Identity
        );
        assert_eq!(
            Encoding::from_headers(&headers(&["identity"])).unwrap(),
            Encoding::Identity
        );
    }

    #[test]
    fn known_encodings_are_read_in_any_case() {
        for (value, want) in [
            ("gzip", Encoding::Gzip),
            ("x-gzip", Encoding::Gzip),
            ("GZip", Encoding::Gzip),
            ("deflate", Encoding::Deflate),
            ("br", Encoding::Br),
            (" br ", Encoding::Br),
            ("identity, gzip", Encoding::Gzip),
        ] {
            assert_eq!(
                Encoding::from_headers(&headers(&[value])).unwrap(),
                want,
                "{value}"
            );
        }
    }

    #[test]
    fn stacked_encodings_are_refused() {
        for h in [
            headers(&["gzip, br"]),
            headers(&["gzip", "gzip"]),
            headers(&["deflate", "br"]),
        ] {
            let err = Encoding::from_headers(&h).unwrap_err();
            assert!(matches!(err, CodecError::Unsupported(_)), "{err}");
        }
    }

    #[test]
    fn unknown_encodings_are_refused() {
        for value in ["zstd", "compress", "x-compress", "gzip;q=1"] {
            let err = Encoding::from_headers(&headers(&[value])).unwrap_err();
            assert!(matches!(err, CodecError::Unsupported(_)), "{value}: {err}");
        }
    }

    #[test]
    fn every_encoding_round_trips() {
        let body = sample();
        for encoding in ALL {
            let encoded = encode(encoding, &body).unwrap();
            if encoding != Encoding::Identity {
                assert!(
                    encoded.len() < body.len() / 2,
                    "{encoding} did not compress"
                );
            }
            let decoded = decode(encoding, &encoded, body.len()).unwrap();
            assert_eq!(decoded.as_ref(), body.as_slice(), "{encoding}");
        }
    }

    #[test]
    fn empty_body_round_trips_and_empty_input_decodes_to_empty() {
        for encoding in ALL {
            let encoded = encode(encoding, b"").unwrap();
            assert!(
                decode(encoding, &encoded, 0).unwrap().is_empty(),
                "{encoding}"
            );
            assert!(decode(encoding, b"", 0).unwrap().is_empty(), "{encoding}");
        }
    }

    #[test]
    fn deflate_accepts_raw_deflate_too() {
        let body = sample();
        let decoded = decode(Encoding::Deflate, &raw_deflate(&body), body.len()).unwrap();
        assert_eq!(decoded.as_ref(), body.as_slice());
    }

    #[test]
    fn compression_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let limit = 1024 * 1024;
        for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Br] {
            let bomb = encode(encoding, &zeros).unwrap();
            assert!(bomb.len() < 64 * 1024, "{encoding}: {} bytes", bomb.len());
            let err = decode_err(encoding, &bomb, limit);
            assert!(
                matches!(err, CodecError::TooLarge { limit: l } if l == limit),
                "{encoding}: {err}"
            );
        }
        let err = decode_err(Encoding::Deflate, &raw_deflate(&zeros), limit);
        assert!(
            matches!(err, CodecError::TooLarge { .. }),
            "raw deflate: {err}"
        );
        let err = decode_err(Encoding::Identity, &zeros, limit);
        assert!(
            matches!(err, CodecError::TooLarge { .. }),
            "identity: {err}"
        );
    }

    #[test]
    fn body_of_exactly_the_limit_decodes() {
        let body = sample();
        for encoding in ALL {
            let encoded = encode(encoding, &body).unwrap();
            assert_eq!(
                decode(encoding, &encoded, body.len()).unwrap().len(),
                body.len()
            );
            let err = decode_err(encoding, &encoded, body.len() - 1);
            assert!(
                matches!(err, CodecError::TooLarge { .. }),
                "{encoding}: {err}"
            );
        }
    }

    #[test]
    fn garbage_is_corrupt() {
        let garbage = b"this is not compressed at all, not even a little bit";
        for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Br] {
            let err = decode_err(encoding, garbage, 1 << 20);
            assert!(
                matches!(err, CodecError::Corrupt { .. }),
                "{encoding}: {err}"
            );
        }
    }

    #[test]
    fn truncated_stream_is_corrupt() {
        let body = sample();
        for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Br] {
            let encoded = encode(encoding, &body).unwrap();
            for cut in [encoded.len() / 2, encoded.len() - 1] {
                let err = decode_err(encoding, &encoded[..cut], 1 << 20);
                assert!(
                    matches!(err, CodecError::Corrupt { .. }),
                    "{encoding} cut at {cut}: {err}"
                );
            }
        }
    }

    #[test]
    fn flipped_checksum_is_corrupt() {
        let body = sample();
        for encoding in [Encoding::Gzip, Encoding::Deflate] {
            let mut encoded = encode(encoding, &body).unwrap().to_vec();
            // gzip ends with CRC32 + size, zlib with Adler-32: damage the checksum.
            let at = encoded.len() - if encoding == Encoding::Gzip { 8 } else { 4 };
            encoded[at] ^= 0xff;
            let err = decode_err(encoding, &encoded, 1 << 20);
            assert!(
                matches!(err, CodecError::Corrupt { .. }),
                "{encoding}: {err}"
            );
        }
    }

    #[test]
    fn bytes_after_the_stream_are_corrupt() {
        let body = sample();
        for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Br] {
            let mut encoded = encode(encoding, &body).unwrap().to_vec();
            encoded.extend_from_slice(b"trailing junk");
            let err = decode_err(encoding, &encoded, 1 << 20);
            assert!(
                matches!(err, CodecError::Corrupt { .. }),
                "{encoding}: {err}"
            );
        }
    }

    #[test]
    fn concatenated_gzip_members_decode_as_one_body() {
        let mut encoded = encode(Encoding::Gzip, b"hello ").unwrap().to_vec();
        encoded.extend_from_slice(&encode(Encoding::Gzip, b"world").unwrap());
        assert_eq!(
            decode(Encoding::Gzip, &encoded, 100).unwrap().as_ref(),
            b"hello world"
        );
    }

    #[test]
    fn errors_name_no_body_bytes() {
        let err = decode_err(Encoding::Gzip, b"secret-token-value", 100);
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
