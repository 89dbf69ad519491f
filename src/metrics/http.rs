//! The little HTTP/1.x the metrics endpoint speaks: reading a request head from bytes (bounded,
//! strict, never panicking on garbage), choosing the answer, and writing an answer with
//! `Connection: close`. Pure: the socket loop lives in `listener.rs`.

/// Largest request head (request line and headers) read; a longer one is answered 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;

/// The path Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request head longer than {MAX_REQUEST_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("unsupported HTTP version")]
    Version,
}

impl HttpError {
    pub fn status(&self) -> Status {
        match self {
            HttpError::TooLarge => Status::HeaderTooLarge,
            HttpError::Malformed(_) => Status::BadRequest,
            HttpError::Version => Status::VersionNotSupported,
        }
    }
}

/// The request line of a complete request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The path, without its query string.
    pub path: String,
    /// The value of the `Authorization` header, if the request has one.
    pub authorization: Option<String>,
}

/// Reads a request head from the bytes received so far: `Ok(None)` while its end (an empty
/// line) has not arrived yet.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        // Refuse garbage early rather than wait for the end of a head that never comes.
        let method_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
        if !buf[..method_end].iter().all(u8::is_ascii_uppercase) {
            return Err(HttpError::Malformed("bad method"));
        }
        return if buf.len() >= MAX_REQUEST_HEAD_BYTES { Err(HttpError::TooLarge) } else { Ok(None) };
    };
    if end + 4 > MAX_REQUEST_HEAD_BYTES {
        return Err(HttpError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::Malformed("not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed("request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed("bad method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(HttpError::Malformed("bad request target"));
    }
    if !version.starts_with("HTTP/") {
        return Err(HttpError::Malformed("bad version"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::Version);
    }
    let mut authorization = None;
    for header in lines {
        let Some((name, value)) = header.split_once(':') else {
            return Err(HttpError::Malformed("header without ':'"));
        };
        if name.is_empty() || name.bytes().any(|b| !(b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))) {
            return Err(HttpError::Malformed("bad header name"));
        }
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim().to_owned());
        }
    }
    let path = target.split('?').next().unwrap_or_default();
    Ok(Some(RequestHead { method: method.to_owned(), path: path.to_owned(), authorization }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    HeaderTooLarge,
    InternalError,
    VersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeaderTooLarge => 431,
            Status::InternalError => 500,
            Status::VersionNotSupported => 505,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeaderTooLarge => "Request Header Fields Too Large",
            Status::InternalError => "Internal Server Error",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// What to do with a request: scrape (answer with the metrics) or answer `Status` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// GET (or HEAD, without the body) of [`METRICS_PATH`].
    Metrics {
        head_only: bool,
    },
    Refuse(Status),
}

/// The HTTP basic authentication a scraper must send (`metrics_basic_auth_file`).
#[derive(Clone)]
pub struct BasicAuth {
    /// The whole expected header value, `Basic <base64 of user:password>`.
    expected: String,
}

impl BasicAuth {
    /// Authentication as `user:password` (the password may hold ':'; the user may not).
    pub fn new(user_password: &str) -> Result<BasicAuth, &'static str> {
        match user_password.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                use base64ct::Encoding;
                Ok(BasicAuth {
                    expected: format!("Basic {}", base64ct::Base64::encode_string(user_password.as_bytes())),
                })
            }
            _ => Err("expected one line user:password, neither empty"),
        }
    }

    /// Whether an `Authorization` header value carries the expected user and password; the
    /// comparison takes the same time wherever the first difference is.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization else { return false };
        let (given, expected) = (given.as_bytes(), self.expected.as_bytes());
        given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// What to answer `head`; with `auth`, a request without its credentials is refused 401.
pub fn route(head: &RequestHead, auth: Option<&BasicAuth>) -> Route {
    if auth.is_some_and(|auth| !auth.allows(head.authorization.as_deref())) {
        return Route::Refuse(Status::Unauthorized);
    }
    match (head.path.as_str(), head.method.as_str()) {
        (METRICS_PATH, "GET") => Route::Metrics { head_only: false },
        (METRICS_PATH, "HEAD") => Route::Metrics { head_only: true },
        (METRICS_PATH, _) => Route::Refuse(Status::MethodNotAllowed),
        _ => Route::Refuse(Status::NotFound),
    }
}

/// A complete answer; the connection closes after it.
pub fn response(status: Status, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    match status {
        Status::MethodNotAllowed => out.push_str("Allow: GET, HEAD\r\n"),
        Status::Unauthorized => out.push_str("WWW-Authenticate: Basic realm=\"enigmadb metrics\"\r\n"),
        _ => {}
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// A short plain-text answer for a refused request.
pub fn refusal(status: Status, message: &str) -> Vec<u8> {
    response(status, "text/plain; charset=utf-8", format!("{message}\n").as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(text: &str) -> Result<Option<RequestHead>, HttpError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn scrape_requests_route_to_the_metrics() {
        let h = head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n").unwrap().unwrap();
        assert_eq!(route(&h, None), Route::Metrics { head_only: false });
        let h = head("HEAD /metrics HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(route(&h, None), Route::Metrics { head_only: true });
        let h = head("POST /metrics HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(route(&h, None), Route::Refuse(Status::MethodNotAllowed));
        let h = head("GET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(route(&h, None), Route::Refuse(Status::NotFound));
    }

    #[test]
    fn with_basic_auth_only_the_right_user_and_password_scrape() {
        let auth = BasicAuth::new("prom:s3:cret").unwrap();
        // base64("prom:s3:cret") = cHJvbTpzMzpjcmV0
        let good = head("GET /metrics HTTP/1.1\r\nauthorization:  Basic cHJvbTpzMzpjcmV0\r\n\r\n").unwrap().unwrap();
        assert_eq!(route(&good, Some(&auth)), Route::Metrics { head_only: false });
        let wrong = head("GET /metrics HTTP/1.1\r\nAuthorization: Basic cHJvbTp3cm9uZw==\r\n\r\n").unwrap().unwrap();
        assert_eq!(route(&wrong, Some(&auth)), Route::Refuse(Status::Unauthorized));
        let none = head("GET /metrics HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(route(&none, Some(&auth)), Route::Refuse(Status::Unauthorized));
        assert!(String::from_utf8(refusal(Status::Unauthorized, "no")).unwrap().contains("WWW-Authenticate: Basic"));
        assert!(BasicAuth::new("nocolon").is_err() && BasicAuth::new(":pw").is_err() && BasicAuth::new("u:").is_err());
    }

    #[test]
    fn incomplete_heads_wait_and_bad_ones_are_refused() {
        assert_eq!(head("GET /metrics HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(head("GE"), Ok(None));
        assert_eq!(head("\u{16}\u{3}"), Err(HttpError::Malformed("bad method")));
        assert_eq!(head("GET /metrics HTTP/2.0\r\n\r\n").unwrap_err().status(), Status::VersionNotSupported);
        assert_eq!(head("GET  /metrics HTTP/1.1\r\n\r\n").unwrap_err().status(), Status::BadRequest);
        assert_eq!(head("get /metrics HTTP/1.1\r\n\r\n").unwrap_err().status(), Status::BadRequest);
        assert_eq!(head("GET metrics HTTP/1.1\r\n\r\n").unwrap_err().status(), Status::BadRequest);
        assert_eq!(head("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n").unwrap_err().status(), Status::BadRequest);
        assert_eq!(head("\u{16}\u{3}\u{1}\r\n\r\n").unwrap_err().status(), Status::BadRequest);
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_REQUEST_HEAD_BYTES));
        assert_eq!(head(&long), Err(HttpError::TooLarge));
        let long_complete = format!("{long}\r\n");
        assert_eq!(head(&long_complete), Err(HttpError::TooLarge));
    }

    #[test]
    fn answers_carry_their_length_and_close() {
        let bytes = response(Status::Ok, "text/plain", b"abc", false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 3\r\nConnection: close\r\n\r\nabc"));
        let head_only = String::from_utf8(response(Status::Ok, "text/plain", b"abc", true)).unwrap();
        assert!(head_only.ends_with("\r\n\r\n"));
        assert!(String::from_utf8(refusal(Status::MethodNotAllowed, "no")).unwrap().contains("Allow: GET, HEAD"));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes);
        }

        #[test]
        fn garbage_after_a_good_request_line_never_panics(tail in "[ -~\r\n]{0,300}") {
            let _ = parse_head(format!("GET /metrics HTTP/1.1\r\n{tail}\r\n\r\n").as_bytes());
        }
    }
}
