//! The site: the page, the embedded papers and one prebuilt response per host name. Pure: no I/O.
//!
//! Everything a client can get is built here once, before any client arrives: `Site::build` renders
//! the page and lays out every response's status line and headers next to its body. Serving is
//! then a lookup by host name and a write of bytes that already exist.

mod page;
#[cfg(test)]
mod manifest;

use sha2::{Digest, Sha256};

/// One line of `assets/site.toml`, as the build script turned it into Rust.
struct Entry {
    hosts: &'static [&'static str],
    default: bool,
    title: Option<&'static str>,
    content: Content,
}

enum Content {
    /// Rendered by `page.rs`; the name is checked at build time against `manifest::PAGES`.
    Page(&'static str),
    /// Embedded in the component.
    File { content_type: &'static str, bytes: &'static [u8] },
}

include!(concat!(env!("OUT_DIR"), "/manifest.rs"));

/// A response ready to be written: status line and headers, then the body.
pub struct Response {
    hosts: &'static [&'static str],
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    head: Box<[u8]>,
    body: Body,
    sha256: [u8; 32],
    is_default: bool,
}

enum Body {
    Rendered(Box<[u8]>),
    Embedded(&'static [u8]),
}

impl Response {
    fn new(entry: &Entry, body: Body) -> Response {
        let (content_type, is_page) = match entry.content {
            Content::Page(_) => ("text/html; charset=utf-8", true),
            Content::File { content_type, .. } => (content_type, false),
        };
        let bytes = match &body {
            Body::Rendered(bytes) => &bytes[..],
            Body::Embedded(bytes) => bytes,
        };
        let mut headers = vec![
            ("content-type", content_type.to_owned()),
            ("content-length", bytes.len().to_string()),
            ("strict-transport-security", "max-age=31536000".to_owned()),
            ("x-content-type-options", "nosniff".to_owned()),
        ];
        if is_page {
            // The page needs nothing from anywhere: its style and icon are inline.
            let policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";
            headers.push(("content-security-policy", policy.to_owned()));
        }
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for (name, value) in headers.iter().chain([&("connection", "close".to_owned())]) {
            head.push_str(&format!("{}: {value}\r\n", header_case(name)));
        }
        head.push_str("\r\n");
        Response {
            hosts: entry.hosts,
            content_type,
            headers,
            head: head.into_bytes().into_boxed_slice(),
            sha256: Sha256::digest(bytes).into(),
            body,
            is_default: entry.default,
        }
    }

    /// Host names that select this response; the first is its name in logs.
    pub fn hosts(&self) -> &'static [&'static str] {
        self.hosts
    }

    pub fn content_type(&self) -> &'static str {
        self.content_type
    }

    /// Headers for an HTTP layer that frames responses itself (the edge twin): lower-case names,
    /// without `Connection`, which belongs to HTTP/1.1 framing.
    pub fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// `HTTP/1.1 200 OK`, the headers and the blank line, as written on a TLS connection.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    pub fn body(&self) -> &[u8] {
        match &self.body {
            Body::Rendered(bytes) => bytes,
            Body::Embedded(bytes) => bytes,
        }
    }

    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    pub fn is_default(&self) -> bool {
        self.is_default
    }
}

/// `content-type` -> `Content-Type`: the spelling people expect to read on the wire.
fn header_case(name: &str) -> String {
    name.split('-')
        .map(|word| word[..1].to_ascii_uppercase() + &word[1..])
        .collect::<Vec<_>>()
        .join("-")
}

/// Every response of the site, and the lookup from host name to response.
pub struct Site {
    responses: Vec<Response>,
    default: usize,
}

impl Site {
    /// Renders the page and prebuilds every response. Done once: at initialisation, before the
    /// component is snapshotted, so no connection pays for it.
    pub fn build() -> Site {
        let papers: Vec<page::Paper> = ENTRIES
            .iter()
            .filter_map(|entry| {
                let title = entry.title?;
                Some(page::Paper { title, url: https_url(entry.hosts[0]) })
            })
            .collect();
        let responses: Vec<Response> = ENTRIES
            .iter()
            .map(|entry| {
                let body = match entry.content {
                    Content::Page(name) => Body::Rendered(page::render(name, &papers).into_bytes().into()),
                    Content::File { bytes, .. } => Body::Embedded(bytes),
                };
                Response::new(entry, body)
            })
            .collect();
        let default = responses.iter().position(|r| r.is_default).expect("checked at build time");
        Site { responses, default }
    }

    /// The response for a host name (SNI or Host header); `None` or an unknown name gets the
    /// default. Case-insensitive, and tolerant of a trailing dot and of a `:port` suffix.
    pub fn response_for(&self, host: Option<&str>) -> &Response {
        host.and_then(|host| self.lookup(host)).unwrap_or(&self.responses[self.default])
    }

    /// The response this exact host name selects, if the site has one for it.
    pub fn lookup(&self, host: &str) -> Option<&Response> {
        let host = host.split_once(':').map_or(host, |(name, _port)| name);
        let host = host.strip_suffix('.').unwrap_or(host);
        self.responses
            .iter()
            .find(|response| response.hosts.iter().any(|name| name.eq_ignore_ascii_case(host)))
    }

    pub fn responses(&self) -> &[Response] {
        &self.responses
    }

    pub fn default_response(&self) -> &Response {
        &self.responses[self.default]
    }
}

fn https_url(host: &str) -> String {
    match HTTPS_PORT {
        443 => format!("https://{host}/"),
        port => format!("https://{host}:{port}/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(response: &Response) -> (String, Vec<(String, String)>) {
        let head = std::str::from_utf8(response.head()).unwrap();
        let head = head.strip_suffix("\r\n\r\n").expect("head ends with a blank line");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_owned();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("header line is `Name: value`");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        (status, headers)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        let mut found = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let (_, value) = found.next().unwrap_or_else(|| panic!("no {name} header"));
        assert!(found.next().is_none(), "{name} appears twice");
        value
    }

    #[test]
    fn every_response_is_well_formed_http() {
        let site = Site::build();
        for response in site.responses() {
            let (status, headers) = split(response);
            assert_eq!(status, "HTTP/1.1 200 OK");
            let length: usize = header(&headers, "Content-Length").parse().unwrap();
            assert_eq!(length, response.body().len());
            assert_eq!(header(&headers, "Content-Type"), response.content_type());
            assert_eq!(header(&headers, "Connection"), "close");
            assert!(header(&headers, "Strict-Transport-Security").starts_with("max-age="));
            assert_eq!(header(&headers, "X-Content-Type-Options"), "nosniff");
            assert_eq!(response.sha256(), &<[u8; 32]>::from(Sha256::digest(response.body())));
        }
    }

    #[test]
    fn exactly_one_default_and_it_is_the_page() {
        let site = Site::build();
        let defaults: Vec<_> = site.responses().iter().filter(|r| r.is_default()).collect();
        assert_eq!(defaults.len(), 1);
        assert_eq!(defaults[0].content_type(), "text/html; charset=utf-8");
    }

    #[test]
    fn host_names_pick_their_response_and_others_get_the_default() {
        let site = Site::build();
        for response in site.responses() {
            for host in response.hosts() {
                assert!(std::ptr::eq(site.response_for(Some(host)), response), "{host}");
            }
        }
        let default = site.default_response();
        assert!(std::ptr::eq(site.response_for(None), default));
        assert!(std::ptr::eq(site.response_for(Some("unknown.example")), default));
        assert!(site.lookup("unknown.example").is_none());
    }

    #[test]
    fn lookup_ignores_case_trailing_dot_and_port() {
        let site = Site::build();
        let paper = &site.responses()[1];
        let host = paper.hosts()[0];
        for spelling in [host.to_uppercase(), format!("{host}."), format!("{host}:8443")] {
            assert!(std::ptr::eq(site.lookup(&spelling).unwrap(), paper), "{spelling}");
        }
    }

    #[test]
    fn papers_are_real_pdfs_and_embedded_whole() {
        let site = Site::build();
        let pdfs: Vec<_> =
            site.responses().iter().filter(|r| r.content_type() == "application/pdf").collect();
        assert!(pdfs.len() >= 2, "the site serves at least two papers");
        for pdf in pdfs {
            let body = pdf.body();
            assert!(body.starts_with(b"%PDF-"), "{} starts like a PDF", pdf.hosts()[0]);
            let tail = &body[body.len().saturating_sub(32)..];
            assert!(tail.windows(5).any(|w| w == b"%%EOF"), "{} ends like a PDF", pdf.hosts()[0]);
        }
    }

    #[test]
    fn the_page_links_every_paper_by_its_host_name() {
        let site = Site::build();
        let page = std::str::from_utf8(site.default_response().body()).unwrap();
        for response in site.responses().iter().filter(|r| !r.is_default()) {
            assert!(page.contains(&https_url(response.hosts()[0])), "{}", response.hosts()[0]);
        }
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("rel=\"icon\" href=\"data:"), "inline icon: no /favicon.ico request");
    }

    #[test]
    fn header_names_are_spelled_as_on_the_wire() {
        assert_eq!(header_case("strict-transport-security"), "Strict-Transport-Security");
        assert_eq!(header_case("x-content-type-options"), "X-Content-Type-Options");
    }
}
