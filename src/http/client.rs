//! A small blocking HTTP/1.1 client over `std::net::TcpStream`, enough for `tessera bench
//! serve` and the end-to-end tests: one request per connection (`Connection: close`),
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
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let framing = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Framing::Chunked { left_in_chunk: 0, finished: false }
    } else if let Some(length) = header("content-length") {
        Framing::Length(length.parse().map_err(|_| invalid(format!("Content-Length: {length}")))?)
    } else {
        Framing::UntilClose
    };
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
