//! The manifest reader, `$VAR` expansion and env_file (dotenv) parsing: whatever the
//! text, a manifest or diagnostics that render with a location, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |k: &str| match k {
        "PORT" => Some("8080".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let loaded = mothership::manifest::parse(
        Path::new("ship-manifest.toml"),
        Path::new("/nonexistent-fuzz-dir"),
        text.to_string(),
        &env,
    );
    let _ = loaded.render_diags();
    if loaded.manifest.is_none() {
        assert!(loaded.diags.has_errors());
    }
    let _ = mothership::manifest::expand(text, &env);
    // The same text as an env_file.
    if let Ok((vars, _)) = mothership::manifest::dotenv::parse(text, &env) {
        assert!(vars.iter().all(|(k, _)| !k.is_empty()));
    }
});
