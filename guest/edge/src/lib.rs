//! The edge twin: the site as a `wasi:http` incoming-handler. The Host header (`:authority`)
//! picks the prebuilt response, as SNI does on the TLS side; nothing else is computed per request.

// A wasm32 component only: natively (`cargo clippy --workspace`) the crate is empty, rather than a
// second panic handler beside std's.
#![cfg(target_arch = "wasm32")]
#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// A panic is a bug; with no std there is nobody to print it to, so the instance traps and the
/// runtime answers 500.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocator export, through which the runtime passes lists and strings in.
/// Rust's std exports it on wasip2 (and wit-bindgen only for p1), so without std it is ours.
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    let Ok(layout) = Layout::from_size_align(new_len, align) else {
        core::arch::wasm32::unreachable()
    };
    let pointer = match old_len {
        0 => unsafe { alloc(layout) },
        _ => unsafe {
            realloc(
                old,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        },
    };
    if pointer.is_null() {
        core::arch::wasm32::unreachable()
    }
    pointer
}

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "edge-site",
        generate_all,
    });
}

use alloc::borrow::ToOwned;
use bindings::exports::tls_site::site::site as site_export;
use bindings::exports::wasi::http::incoming_handler::Guest as IncomingHandler;
use bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use site::{Response, SITE};

/// The largest piece handed to the output stream in one call (`blocking-write-and-flush` takes at
/// most 4096 bytes).
const WRITE_CHUNK: usize = 4096;

struct Component;

impl IncomingHandler for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let response = SITE.response_for(request.authority().as_deref());
        let (status, headers, body) = match request.method() {
            Method::Get => (200, headers_of(response), Some(response.body())),
            Method::Head => (200, headers_of(response), None),
            _ => (405, method_not_allowed(), None),
        };
        let outgoing = OutgoingResponse::new(headers);
        outgoing
            .set_status_code(status)
            .expect("200 and 405 are valid status codes");
        let Ok(outgoing_body) = outgoing.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(outgoing));
        if let Some(body) = body {
            // The client may go away mid-body; then there is nobody left to tell.
            let _ = write_body(&outgoing_body, body);
        }
        let _ = OutgoingBody::finish(outgoing_body, None);
    }
}

fn headers_of(response: &Response) -> Fields {
    let entries: Vec<(String, Vec<u8>)> = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    Fields::from_list(&entries).expect("prebuilt headers are valid")
}

fn method_not_allowed() -> Fields {
    let entries = [
        ("allow".to_string(), b"GET, HEAD".to_vec()),
        ("content-length".to_string(), b"0".to_vec()),
    ];
    Fields::from_list(&entries).expect("valid headers")
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), ()> {
    let stream = body.write().map_err(drop)?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(chunk).map_err(drop)?;
    }
    Ok(())
}

impl site_export::Guest for Component {
    fn resources() -> Vec<site_export::Resource> {
        SITE.responses()
            .iter()
            .map(|response| site_export::Resource {
                hosts: response
                    .hosts()
                    .iter()
                    .map(|host| host.to_string())
                    .collect(),
                content_type: response.content_type().to_owned(),
                bytes: response.body().len() as u64,
                sha256: response.sha256().to_owned(),
                is_default: response.is_default(),
            })
            .collect()
    }
}

bindings::export!(Component with_types_in bindings);
