//! A small HTTP/1.1 client over `std::net::TcpStream` (and a tokio one for `tessera bench
//! serve`'s streams), enough for the load generator and the end-to-end tests: one request per
//! connection (`Connection: close`),
//! `Content-Length` or chunked bodies, and server-sent events read line by line as they
//! arrive (so a caller can time each token or hang up mid-stream).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response read to its end.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> io::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// How long a read may wait before the client gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Sends one request and reads the whole response.
pub fn request(address: &str, method: &str, path: &str, body: &[u8]) -> io::Result<HttpResponse> {
    let (status, headers, mut reader) = send(address, method, path, body)?;
    let mut body = Vec::new();
    reader.read_to_end(&mut body)?;
    Ok(HttpResponse { status, headers, body })
}

/// Posts `body` to `path` and hands each server-sent event's data to `on_data` as it arrives,
/// until `data: [DONE]`, the end of the stream, or `on_data` returning false (the client then
/// hangs up). A status other than 200 is returned with its body, without events.
pub fn stream_events(
    address: &str,
    path: &str,
    body: &[u8],
    on_data: &mut dyn FnMut(&str) -> bool,
) -> io::Result<HttpResponse> {
    let (status, headers, reader) = send(address, "POST", path, body)?;
    let mut reader = BufReader::new(reader);
    if status != 200 {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        return Ok(HttpResponse { status, headers, body });
    }
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let Some(data) = line.trim_end_matches(['\r', '\n']).strip_prefix("data:") else { continue };
        let data = data.strip_prefix(' ').unwrap_or(data);
        if data == "[DONE]" || !on_data(data) {
            break;
        }
    }
    Ok(HttpResponse { status, headers, body: Vec::new() })
}

/// A response's status line and headers, and a reader of its body.
type ResponseHead = (u16, Vec<(String, String)>, BodyReader);

/// Writes the request and reads the status line and headers; returns a reader of the body.
fn send(address: &str, method: &str, path: &str, body: &[u8]) -> io::Result<ResponseHead> {
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("not an HTTP status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("the connection closed inside the headers".into()));
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let framing = Framing::from_headers(&headers)?;
    Ok((status, headers, BodyReader { inner: reader, framing }))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

enum Framing {
    Length(u64),
    Chunked { left_in_chunk: u64, finished: bool },
    UntilClose,
}

impl Framing {
    /// How the body of a response with these (lower-cased) headers ends: chunked, after
    /// Content-Length bytes, or when the connection closes. Shared by the blocking reader and
    /// the async one (`parse_head`) so that both frame a body alike.
    fn from_headers(headers: &[(String, String)]) -> io::Result<Framing> {
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        Ok(if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            Framing::Chunked { left_in_chunk: 0, finished: false }
        } else if let Some(length) = header("content-length") {
            Framing::Length(length.parse().map_err(|_| invalid(format!("Content-Length: {length}")))?)
        } else {
            Framing::UntilClose
        })
    }
}

/// A response body with its framing taken off.
struct BodyReader {
    inner: BufReader<TcpStream>,
    framing: Framing,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.framing {
            Framing::UntilClose => self.inner.read(buf),
            Framing::Length(left) => {
                let n = (buf.len() as u64).min(*left) as usize;
                if n == 0 {
                    return Ok(0);
                }
                let read = self.inner.read(&mut buf[..n])?;
                *left -= read as u64;
                Ok(read)
            }
            Framing::Chunked { left_in_chunk, finished } => {
                if *finished {
                    return Ok(0);
                }
                if *left_in_chunk == 0 {
                    let mut line = String::new();
                    self.inner.read_line(&mut line)?;
                    let size = line.trim().split(';').next().unwrap_or_default();
                    *left_in_chunk =
                        u64::from_str_radix(size, 16).map_err(|_| invalid(format!("chunk size {line:?}")))?;
                    if *left_in_chunk == 0 {
                        *finished = true;
                        return Ok(0);
                    }
                }
                let n = (buf.len() as u64).min(*left_in_chunk) as usize;
                let read = self.inner.read(&mut buf[..n])?;
                if read == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a chunk"));
                }
                *left_in_chunk -= read as u64;
                if *left_in_chunk == 0 {
                    let mut crlf = [0u8; 2];
                    self.inner.read_exact(&mut crlf)?;
                }
                Ok(read)
            }
        }
    }
}

/// [`stream_events`] on a tokio runtime, so that one thread can drive many streams (the load
/// generator must not spend the cores it measures on a thread per client): the same request,
/// framing and event handling, over a non-blocking socket.
pub async fn stream_events_async(
    address: &str,
    path: &str,
    body: &[u8],
    on_data: &mut (dyn FnMut(&str) -> bool + Send),
) -> io::Result<HttpResponse> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    write_all_async(&stream, &[head.as_bytes(), body].concat()).await?;
    let mut raw = Vec::new();
    let mut scratch = vec![0u8; 16 * 1024];
    let (status, headers, framing) = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            raw.drain(..end + 4);
            break parse_head(&head)?;
        }
        if read_some_async(&stream, &mut scratch, &mut raw).await? == 0 {
            return Err(invalid("the connection closed inside the headers".into()));
        }
    };
    let mut decoder = BodyDecoder { framing, body: Vec::new() };
    let mut lines_from = 0;
    loop {
        let finished = decoder.take(&mut raw)?;
        if status == 200 {
            // Complete lines of the decoded body are events; the rest waits for more bytes.
            while let Some(n) = decoder.body[lines_from..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&decoder.body[lines_from..lines_from + n]).into_owned();
                lines_from += n + 1;
                let Some(data) = line.trim_end_matches('\r').strip_prefix("data:") else { continue };
                let data = data.strip_prefix(' ').unwrap_or(data);
                if data == "[DONE]" || !on_data(data) {
                    return Ok(HttpResponse { status, headers, body: Vec::new() });
                }
            }
            decoder.body.drain(..lines_from);
            lines_from = 0;
        }
        if finished || read_some_async(&stream, &mut scratch, &mut raw).await? == 0 {
            let body = if status == 200 { Vec::new() } else { decoder.body };
            return Ok(HttpResponse { status, headers, body });
        }
    }
}

async fn write_all_async(stream: &tokio::net::TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what the socket has (waiting for something) onto `into`; 0 at the end of the stream.
async fn read_some_async(stream: &tokio::net::TcpStream, scratch: &mut [u8], into: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(scratch) {
            Ok(n) => {
                into.extend_from_slice(&scratch[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// A response's status, headers and body framing.
type ParsedHead = (u16, Vec<(String, String)>, Framing);

/// The status and headers of a response head (without its blank line), and its body's framing.
fn parse_head(head: &str) -> io::Result<ParsedHead> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("not an HTTP status line: {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let framing = Framing::from_headers(&headers)?;
    Ok((status, headers, framing))
}

/// Takes the framing off body bytes as they arrive.
struct BodyDecoder {
    framing: Framing,
    body: Vec<u8>,
}

impl BodyDecoder {
    /// Moves what it can of `raw` into the body; true once the body is complete.
    fn take(&mut self, raw: &mut Vec<u8>) -> io::Result<bool> {
        match &mut self.framing {
            Framing::UntilClose => {
                self.body.append(raw);
                Ok(false)
            }
            Framing::Length(left) => {
                let n = raw.len().min(*left as usize);
                self.body.extend(raw.drain(..n));
                *left -= n as u64;
                Ok(*left == 0)
            }
            Framing::Chunked { left_in_chunk, finished } => loop {
                if *finished {
                    return Ok(true);
                }
                if *left_in_chunk == 0 {
                    let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else { return Ok(false) };
                    let line = String::from_utf8_lossy(&raw[..end]).into_owned();
                    let size = line.trim().split(';').next().unwrap_or_default();
                    let size = u64::from_str_radix(size, 16).map_err(|_| invalid(format!("chunk size {line:?}")))?;
                    if size == 0 {
                        raw.clear();
                        *finished = true;
                        return Ok(true);
                    }
                    // The chunk's data and its CRLF.
                    raw.drain(..end + 2);
                    *left_in_chunk = size + 2;
                }
                let n = raw.len().min(*left_in_chunk as usize);
                if n == 0 {
                    return Ok(false);
                }
                // `left_in_chunk` counts the chunk's CRLF here too; it is not data.
                let data = left_in_chunk.saturating_sub(2).min(n as u64) as usize;
                self.body.extend_from_slice(&raw[..data]);
                raw.drain(..n);
                *left_in_chunk -= n as u64;
            },
        }
    }
}
