//! A payload module in Rust (no_std, no allocator) built for `wasm32-unknown-unknown`: an
//! API-key check. It reads the request JSON, walks its `headers` object for `x-api-key`,
//! compares it with the `key` of its config, and blocks with 401 when they differ (or
//! either is missing); otherwise it marks the request with `x-authenticated: rust-guest`
//! and lets it through. Built by `build.sh` with Debian's Rust (see the README there).
#![no_std]

#[link(wasm_import_module = "env")]
extern "C" {
    fn get_request() -> i32;
    fn read_request(ptr: *mut u8, max: i32) -> i32;
    fn get_config() -> i32;
    fn read_config(ptr: *mut u8, max: i32) -> i32;
    fn set_block(status: i32, ptr: *const u8, len: i32);
    fn set_request_header(name: *const u8, name_len: i32, value: *const u8, value_len: i32)
        -> i32;
}

const MAX: usize = 16 * 1024;
static mut REQUEST: [u8; MAX] = [0; MAX];
static mut CONFIG: [u8; 1024] = [0; 1024];

/// The bytes of a JSON string starting at `at` (an opening quote): its raw content and the
/// index after its closing quote; None when it has escapes or does not end.
fn string(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((&b[start..i], i + 1)),
            b'\\' => return None,
            _ => i += 1,
        }
    }
    None
}

/// The value of string member `name` of the object starting at `at` (its `{`), when the
/// object is flat and compact with string values, as the host writes headers and config.
fn member<'a>(b: &'a [u8], mut at: usize, name: &[u8]) -> Option<&'a [u8]> {
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        let (k, next) = string(b, at)?;
        if b.get(next) != Some(&b':') {
            return None;
        }
        let (v, next) = string(b, next + 1)?;
        if k == name {
            return Some(v);
        }
        match b.get(next) {
            Some(b',') => at = next + 1,
            _ => return None,
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn read(buf: &mut [u8], len: i32, f: unsafe extern "C" fn(*mut u8, i32) -> i32) -> Option<usize> {
    if len <= 0 || len as usize > buf.len() {
        return None;
    }
    // SAFETY: the host writes at most `buf.len()` bytes into the buffer.
    let n = unsafe { f(buf.as_mut_ptr(), buf.len() as i32) };
    (n > 0).then_some(n as usize)
}

fn allowed() -> bool {
    // SAFETY: one call at a time on the module's only thread.
    let (req, cfg) = unsafe { (&mut *core::ptr::addr_of_mut!(REQUEST), &mut *core::ptr::addr_of_mut!(CONFIG)) };
    let Some(cn) = read(cfg, unsafe { get_config() }, read_config) else {
        return false;
    };
    let Some(key) = member(&cfg[..cn], 0, b"key") else {
        return false;
    };
    let Some(rn) = read(req, unsafe { get_request() }, read_request) else {
        return false;
    };
    let req = &req[..rn];
    let Some(h) = find(req, b"\"headers\":{") else {
        return false;
    };
    let given = member(req, h + "\"headers\":".len(), b"x-api-key");
    !key.is_empty() && given == Some(key)
}

#[no_mangle]
pub extern "C" fn on_request() {
    if allowed() {
        let (n, v) = (b"x-authenticated", b"rust-guest");
        // SAFETY: pointers and lengths of live byte strings.
        unsafe { set_request_header(n.as_ptr(), n.len() as i32, v.as_ptr(), v.len() as i32) };
    } else {
        let body = b"missing or wrong api key";
        // SAFETY: as above.
        unsafe { set_block(401, body.as_ptr(), body.len() as i32) };
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
