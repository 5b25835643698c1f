//! The JSON-RPC transport to bitcoind: HTTP/1.1 over one kept-alive TCP connection, with a
//! timeout on connecting and on every read and write, and a bound on the size of an answer
//! (checked against `Content-Length` before anything is allocated).
//!
//! Written here rather than taken from `jsonrpc`'s `simple_http`, whose only bound is 1 GiB:
//! a node (or whatever answers at its address) must not make the coordinator allocate more than
//! [`MAX_ANSWER_BYTES`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use bdk_bitcoind_rpc::bitcoincore_rpc::jsonrpc::{self, Request, Response, Transport};
use zeroize::Zeroizing;

/// The largest answer read: above a full block in hex (4 MB of block, 8 MB of hex) and the
/// txid list of a full default mempool (about 200,000 txids, 14 MB).
pub const MAX_ANSWER_BYTES: u64 = 32 * 1024 * 1024;

/// The largest status line or header line, and all headers together.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest chunk-size line of a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// Why an exchange with the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Connecting, writing or reading failed (refused, reset, timed out).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// HTTP 401.
    #[error("the node refused the credentials (HTTP 401)")]
    Unauthorized,
    /// The answer is larger than the bound.
    #[error("the answer is {len} bytes or more, over the bound of {max} bytes")]
    TooLarge {
        /// Its size (announced, or read so far).
        len: u64,
        /// The bound.
        max: u64,
    },
    /// Not an HTTP answer this transport understands.
    #[error("malformed HTTP answer: {0}")]
    Malformed(&'static str),
    /// A status without a JSON-RPC body.
    #[error("HTTP status {0}")]
    Status(u16),
}

/// One node's address and credentials, and the connection kept open to it.
pub struct Http {
    addr: SocketAddr,
    /// `Basic base64(user:password)`.
    authorization: Zeroizing<String>,
    timeout: Duration,
    max_answer: u64,
    conn: Mutex<Option<BufReader<TcpStream>>>,
}

impl Http {
    /// A transport to `addr` authenticating as `user`; nothing is connected yet.
    pub fn new(addr: SocketAddr, user: &str, password: &str, timeout: Duration) -> Http {
        let credentials = Zeroizing::new(format!("{user}:{password}"));
        let mut authorization = Zeroizing::new(String::from("Basic "));
        base64_into(credentials.as_bytes(), &mut authorization);
        Http {
            addr,
            authorization,
            timeout,
            max_answer: MAX_ANSWER_BYTES,
            conn: Mutex::new(None),
        }
    }

    /// Another bound on answers (tests).
    #[cfg(test)]
    fn with_max_answer(mut self, max: u64) -> Http {
        self.max_answer = max;
        self
    }

    fn connect(&self) -> Result<BufReader<TcpStream>, HttpError> {
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        Ok(BufReader::new(stream))
    }

    /// POSTs `body` and returns the status and the body of the answer. A kept-alive
    /// connection that fails before any answer is replaced once by a fresh one.
    fn post(&self, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            self.authorization.as_str(),
            body.len()
        );
        let head = Zeroizing::new(head.into_bytes());
        let reused = slot.is_some();
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.connect()?,
        };
        let answer = match exchange(&mut conn, &head, body, self.max_answer) {
            Err(HttpError::Io(_)) if reused => {
                conn = self.connect()?;
                exchange(&mut conn, &head, body, self.max_answer)?
            }
            other => other?,
        };
        if answer.keep_alive {
            *slot = Some(conn);
        }
        Ok((answer.status, answer.body))
    }

    fn call(&self, body: &[u8]) -> Result<Vec<u8>, jsonrpc::Error> {
        let transport = |e: HttpError| jsonrpc::Error::Transport(Box::new(e));
        let (status, answer) = self.post(body).map_err(transport)?;
        if status == 401 {
            return Err(transport(HttpError::Unauthorized));
        }
        // Bitcoin Core answers RPC errors with a JSON body under a 4xx/5xx status too.
        if status != 200 && serde_json::from_slice::<serde_json::Value>(&answer).is_err() {
            return Err(transport(HttpError::Status(status)));
        }
        Ok(answer)
    }
}

impl Transport for Http {
    fn send_request(&self, req: Request) -> Result<Response, jsonrpc::Error> {
        let body = serde_json::to_vec(&req)?;
        Ok(serde_json::from_slice(&self.call(&body)?)?)
    }

    fn send_batch(&self, reqs: &[Request]) -> Result<Vec<Response>, jsonrpc::Error> {
        let body = serde_json::to_vec(reqs)?;
        Ok(serde_json::from_slice(&self.call(&body)?)?)
    }

    fn fmt_target(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "http://{}", self.addr)
    }
}

struct Answer {
    status: u16,
    body: Vec<u8>,
    keep_alive: bool,
}

fn exchange(
    conn: &mut BufReader<TcpStream>,
    head: &[u8],
    body: &[u8],
    max: u64,
) -> Result<Answer, HttpError> {
    let stream = conn.get_mut();
    stream.write_all(head)?;
    stream.write_all(body)?;
    stream.flush()?;
    read_answer(conn, max)
}

/// Reads one HTTP/1.1 answer: status line, headers, then a body of `Content-Length` bytes,
/// in chunks, or up to the end of the stream; never more than `max` bytes of body.
fn read_answer(r: &mut impl BufRead, max: u64) -> Result<Answer, HttpError> {
    let mut budget = MAX_HEAD_BYTES;
    let status_line = read_line(r, &mut budget)?;
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("no HTTP/1.x status line"));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(HttpError::Malformed("no status code"))?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = version != "HTTP/1.0";
    loop {
        let line = read_line(r, &mut budget)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed("a header without ':'"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| HttpError::Malformed("a bad Content-Length"))?;
                length = Some(n);
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(r, max, &mut budget)?
    } else if let Some(n) = length {
        if n > max {
            return Err(HttpError::TooLarge { len: n, max });
        }
        let mut body = Vec::new();
        (&mut *r).take(n).read_to_end(&mut body)?;
        if body.len() as u64 != n {
            return Err(HttpError::Malformed("the body ended early"));
        }
        body
    } else {
        keep_alive = false;
        read_bounded(r, max)?
    };
    Ok(Answer {
        status,
        body,
        keep_alive,
    })
}

fn read_bounded(r: &mut impl Read, max: u64) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    (&mut *r)
        .take(max.saturating_add(1))
        .read_to_end(&mut body)?;
    if body.len() as u64 > max {
        return Err(HttpError::TooLarge {
            len: body.len() as u64,
            max,
        });
    }
    Ok(body)
}

/// Reads a chunked body; each chunk's size line and its ending have their own small budget
/// (a body of many small chunks is fine), the trailers share the head's.
fn read_chunked(r: &mut impl BufRead, max: u64, budget: &mut usize) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r, &mut { MAX_CHUNK_LINE_BYTES })?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            u64::from_str_radix(size, 16).map_err(|_| HttpError::Malformed("a bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(r, budget)?.is_empty() {}
            return Ok(body);
        }
        let len = (body.len() as u64).saturating_add(size);
        if len > max {
            return Err(HttpError::TooLarge { len, max });
        }
        let before = body.len();
        (&mut *r).take(size).read_to_end(&mut body)?;
        if (body.len() - before) as u64 != size
            || !read_line(r, &mut { MAX_CHUNK_LINE_BYTES })?.is_empty()
        {
            return Err(HttpError::Malformed("a chunk ended early"));
        }
    }
}

/// One line without its CRLF, charged to `budget`.
fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX);
    let n = (&mut *r).take(limit).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    if line.last() != Some(&b'\n') {
        return Err(HttpError::Malformed("the head is too long"));
    }
    *budget = budget.saturating_sub(n);
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Malformed("a head line is not UTF-8"))
}

/// Appends the standard base64 (RFC 4648, padded) of `bytes` to `out`.
fn base64_into(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn base64(bytes: &[u8]) -> String {
        let mut s = String::new();
        base64_into(bytes, &mut s);
        s
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    fn parse(text: &str, max: u64) -> Result<Answer, HttpError> {
        read_answer(&mut io::Cursor::new(text.as_bytes().to_vec()), max)
    }

    #[test]
    fn answers_by_length_chunks_or_end_of_stream() -> Result<(), HttpError> {
        let a = parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 10)?;
        assert_eq!(
            (a.status, a.body.as_slice(), a.keep_alive),
            (200, &b"{}"[..], true)
        );
        let a = parse(
            "HTTP/1.1 500 Err\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n",
            10,
        )?;
        assert_eq!((a.status, a.body.as_slice()), (500, &b"abcde"[..]));
        // Many small chunks: each size line has its own budget, not the head's.
        let mut text = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..20_000 {
            text.push_str("1\r\nx\r\n");
        }
        text.push_str("0\r\n\r\n");
        assert_eq!(parse(&text, 20_000)?.body.len(), 20_000);
        let a = parse("HTTP/1.0 200 OK\r\n\r\nhello", 10)?;
        assert_eq!((a.body.as_slice(), a.keep_alive), (&b"hello"[..], false));
        let a = parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            10,
        )?;
        assert!(!a.keep_alive);
        Ok(())
    }

    #[test]
    fn answers_over_the_bound_are_refused_before_reading() {
        let e = parse("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 10);
        assert!(matches!(e, Err(HttpError::TooLarge { len: 11, max: 10 })));
        let e = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\n",
            10,
        );
        assert!(matches!(e, Err(HttpError::TooLarge { len: 12, max: 10 })));
        let e = parse("HTTP/1.1 200 OK\r\n\r\n0123456789a", 10);
        assert!(matches!(e, Err(HttpError::TooLarge { .. })));
        let long = format!(
            "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(parse(&long, 10), Err(HttpError::Malformed(_))));
        assert!(matches!(
            parse("SSH-2.0\r\n\r\n", 10),
            Err(HttpError::Malformed(_))
        ));
        let e = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 10);
        assert!(matches!(e, Err(HttpError::Malformed(_))));
    }

    /// A server that answers each request of one connection with the next canned answer,
    /// after checking the credentials' header.
    #[test]
    fn one_connection_kept_alive_and_401_named() -> Result<(), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> io::Result<usize> {
            let (stream, _) = listener.accept()?;
            let mut r = BufReader::new(stream.try_clone()?);
            let mut w = stream;
            let mut served = 0;
            loop {
                let mut authorized = false;
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line)? == 0 {
                        return Ok(served);
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if line == "Authorization: Basic dTpw" {
                        authorized = true;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = n.parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                r.read_exact(&mut body)?;
                served += 1;
                let answer = if served == 2 {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_string()
                } else if authorized {
                    let request: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let json = serde_json::json!({"result": 7, "error": null, "id": request["id"]})
                        .to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
                        json.len()
                    )
                } else {
                    "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_string()
                };
                w.write_all(answer.as_bytes())?;
            }
        });
        let http = Http::new(addr, "u", "p", Duration::from_secs(5)).with_max_answer(1_000);
        let client = jsonrpc::Client::with_transport(http);
        let first: u32 = client.call("getblockcount", None)?;
        assert_eq!(first, 7);
        let second = client.call::<u32>("getblockcount", None);
        let unauthorized = matches!(&second, Err(jsonrpc::Error::Transport(t))
            if matches!(t.downcast_ref::<HttpError>(), Some(HttpError::Unauthorized)));
        assert!(unauthorized, "{second:?}");
        assert_eq!(client.call::<u32>("getblockcount", None)?, 7);
        drop(client);
        // All three over the one connection the server accepted.
        assert_eq!(server.join().map_err(|_| "server panicked")??, 3);
        Ok(())
    }
}
