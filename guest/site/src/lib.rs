//! The site: the page, the embedded papers and one prebuilt response per host name. Pure: no I/O.
//!
//! Everything a client can get is built at compile time (`build.rs`): the page is rendered, every
//! response's status line and headers are laid out next to its body, every body is digested.
//! Serving is a lookup by host name and a write of bytes that are already in the binary.

// Nothing here needs an operating system; the tests (and the manifest checks they run) do.
#![cfg_attr(not(test), no_std)]

#[cfg(test)]
mod manifest;

/// A response ready to be written: status line and headers, then the body.
pub struct Response {
    hosts: &'static [&'static str],
    content_type: &'static str,
    headers: &'static [(&'static str, &'static str)],
    head: &'static str,
    body: &'static [u8],
    sha256: &'static str,
    is_default: bool,
}

include!(concat!(env!("OUT_DIR"), "/site.rs"));

impl Response {
    /// Host names that select this response; the first is its name in logs.
    pub fn hosts(&self) -> &'static [&'static str] {
        self.hosts
    }

    pub fn content_type(&self) -> &'static str {
        self.content_type
    }

    /// Headers for an HTTP layer that frames responses itself (the edge twin): lower-case names,
    /// without `Connection`, which belongs to HTTP/1.1 framing.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        self.headers
    }

    /// `HTTP/1.1 200 OK`, the headers and the blank line, as written on a TLS connection.
    pub fn head(&self) -> &'static [u8] {
        self.head.as_bytes()
    }

    pub fn body(&self) -> &'static [u8] {
        self.body
    }

    /// SHA-256 of the body, lower-case hex.
    pub fn sha256(&self) -> &'static str {
        self.sha256
    }

    pub fn is_default(&self) -> bool {
        self.is_default
    }
}

/// Every response of the site, and the lookup from host name to response.
pub struct Site {
    responses: &'static [Response],
}

/// The site, as built.
pub static SITE: Site = Site {
    responses: RESPONSES,
};

impl Site {
    /// The response for a host name (SNI or Host header); `None` or an unknown name gets the
    /// default. Case-insensitive, and tolerant of a trailing dot and of a `:port` suffix.
    pub fn response_for(&self, host: Option<&str>) -> &'static Response {
        host.and_then(|host| self.lookup(host))
            .unwrap_or_else(|| self.default_response())
    }

    /// The response this exact host name selects, if the site has one for it.
    pub fn lookup(&self, host: &str) -> Option<&'static Response> {
        let host = host.split_once(':').map_or(host, |(name, _port)| name);
        let host = host.strip_suffix('.').unwrap_or(host);
        self.responses.iter().find(|response| {
            response
                .hosts
                .iter()
                .any(|name| name.eq_ignore_ascii_case(host))
        })
    }

    pub fn responses(&self) -> &'static [Response] {
        self.responses
    }

    pub fn default_response(&self) -> &'static Response {
        self.responses
            .iter()
            .find(|r| r.is_default)
            .expect("the manifest has exactly one default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn split(response: &Response) -> (String, Vec<(String, String)>) {
        let head = std::str::from_utf8(response.head()).unwrap();
        let head = head
            .strip_suffix("\r\n\r\n")
            .expect("head ends with a blank line");
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
        let site = &SITE;
        for response in site.responses() {
            let (status, headers) = split(response);
            assert_eq!(status, "HTTP/1.1 200 OK");
            let length: usize = header(&headers, "Content-Length").parse().unwrap();
            assert_eq!(length, response.body().len());
            assert_eq!(header(&headers, "Content-Type"), response.content_type());
            assert_eq!(header(&headers, "Connection"), "close");
            assert!(header(&headers, "Strict-Transport-Security").starts_with("max-age="));
            assert_eq!(header(&headers, "X-Content-Type-Options"), "nosniff");
            let digest: String = Sha256::digest(response.body())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(response.sha256(), digest);
        }
    }

    #[test]
    fn exactly_one_default_and_it_is_the_page() {
        let site = &SITE;
        let defaults: Vec<_> = site.responses().iter().filter(|r| r.is_default()).collect();
        assert_eq!(defaults.len(), 1);
        assert_eq!(defaults[0].content_type(), "text/html; charset=utf-8");
    }

    #[test]
    fn host_names_pick_their_response_and_others_get_the_default() {
        let site = &SITE;
        for response in site.responses() {
            for host in response.hosts() {
                assert!(
                    std::ptr::eq(site.response_for(Some(host)), response),
                    "{host}"
                );
            }
        }
        let default = site.default_response();
        assert!(std::ptr::eq(site.response_for(None), default));
        assert!(std::ptr::eq(
            site.response_for(Some("unknown.example")),
            default
        ));
        assert!(site.lookup("unknown.example").is_none());
    }

    #[test]
    fn lookup_ignores_case_trailing_dot_and_port() {
        let site = &SITE;
        let paper = &site.responses()[1];
        let host = paper.hosts()[0];
        for spelling in [
            host.to_uppercase(),
            format!("{host}."),
            format!("{host}:8443"),
        ] {
            assert!(
                std::ptr::eq(site.lookup(&spelling).unwrap(), paper),
                "{spelling}"
            );
        }
    }

    #[test]
    fn papers_are_real_pdfs_and_embedded_whole() {
        let site = &SITE;
        let pdfs: Vec<_> = site
            .responses()
            .iter()
            .filter(|r| r.content_type() == "application/pdf")
            .collect();
        assert!(pdfs.len() >= 2, "the site serves at least two papers");
        for pdf in pdfs {
            let body = pdf.body();
            assert!(
                body.starts_with(b"%PDF-"),
                "{} starts like a PDF",
                pdf.hosts()[0]
            );
            let tail = &body[body.len().saturating_sub(32)..];
            assert!(
                tail.windows(5).any(|w| w == b"%%EOF"),
                "{} ends like a PDF",
                pdf.hosts()[0]
            );
        }
    }

    #[test]
    fn the_page_links_every_paper_by_its_host_name() {
        let site = &SITE;
        let page = std::str::from_utf8(site.default_response().body()).unwrap();
        for response in site.responses().iter().filter(|r| !r.is_default()) {
            let url = format!("https://{}:8443/", response.hosts()[0]);
            assert!(page.contains(&url), "{url}");
        }
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(
            page.contains("rel=\"icon\" href=\"data:"),
            "inline icon: no /favicon.ico request"
        );
    }
}
