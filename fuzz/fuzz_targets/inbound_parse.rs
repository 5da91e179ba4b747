//! Whatever arrives on the bounce address: the parser must not panic, hang or grow without
//! bound, and whatever report it makes must classify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = squeeze::inbound::parse(data, "fuzz", 0);
    if let Some(report) = parsed.report {
        let _ = squeeze::domain::bounce::classify(&report);
    }
});
