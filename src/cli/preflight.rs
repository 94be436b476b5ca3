//! `mothership preflight`: validate the manifest, check every uplink, print one line each
//! (name, masked URL, ok or the error, time taken); exit 0 when all pass, else 1.

use super::{load, Global, EXIT_FAILED, EXIT_OK};
use crate::uplinks;

pub fn preflight(g: &Global) -> i32 {
    let m = match load(g) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if m.uplinks.is_empty() {
        println!("no uplinks to check in {}", m.path.display());
        return EXIT_OK;
    }
    match uplinks::check_all(&m.uplinks) {
        Ok(Some(reports)) => {
            for line in uplinks::format_reports(&reports) {
                println!("{line}");
            }
            let failed = reports.iter().filter(|r| r.result.is_err()).count();
            if failed == 0 {
                EXIT_OK
            } else {
                eprintln!("mothership: {failed} of {} uplink(s) failed", reports.len());
                EXIT_FAILED
            }
        }
        Ok(None) => {
            eprintln!("mothership: preflight interrupted");
            EXIT_FAILED
        }
        Err(e) => {
            eprintln!("mothership: cannot run the checks: {e}");
            EXIT_FAILED
        }
    }
}
