//! User-Agent classification: any bytes, a class, never a panic; only the first 512
//! bytes count.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::proto::ua::classify;

fuzz_target!(|data: &[u8]| {
    let c = classify(data);
    let _ = c.label();
    if data.len() > 512 {
        assert_eq!(classify(&data[..512]).label(), c.label());
    }
});
