//! Fuzz target: arbitrary bytes as a port-80 request head into `redirect::answer`
//! (host/src/redirect.rs, compiled here by path).
//!
//! Whatever the bytes, the answer is a 301 to one of the site's own https URLs or a 400, never a
//! panic, and nothing from the request reaches the response except a name the site serves (so no
//! header injection, no open redirect).

#![no_main]

#[allow(dead_code)]
#[path = "../../src/redirect.rs"]
mod redirect;

use libfuzzer_sys::fuzz_target;
use redirect::{RedirectOutcome, RedirectTable, answer};
use std::sync::LazyLock;

const HOSTS: [&str; 3] = ["tls-site.localhost", "www.tls-site.localhost", "sandbox.tls-site.localhost"];

static TABLE: LazyLock<RedirectTable> =
    LazyLock::new(|| RedirectTable::new(HOSTS.map(str::to_owned).to_vec(), HOSTS[0].to_owned(), 8443));

fuzz_target!(|head: &[u8]| {
    // As serve_connection reads it: never more than the bound.
    let head = &head[..head.len().min(redirect::MAX_REQUEST_HEAD)];
    let Some((response, outcome)) = answer(&TABLE, head) else {
        assert!(head.len() < redirect::MAX_REQUEST_HEAD, "a full-size head must be answered");
        return;
    };
    let response = String::from_utf8(response).expect("responses are ASCII");
    match outcome {
        RedirectOutcome::Redirected(location) => {
            let allowed: Vec<String> = HOSTS.iter().map(|host| format!("https://{host}:8443/")).collect();
            assert!(allowed.contains(&location), "redirect to {location:?}");
            assert!(response.starts_with("HTTP/1.1 301 Moved Permanently\r\n"));
            assert_eq!(response.matches("\r\n").count(), 5, "one line per header, no injected ones");
        }
        RedirectOutcome::BadRequest(_) => assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n")),
        other => panic!("answer gave {other:?}"),
    }
});
