//! `squeeze doctor`: checks the sending setup (SPF, DKIM, DMARC, https, one-click
//! unsubscribe, postal address) and prints pass / warn / fail with the fix for each.
//! Exits 1 when anything fails.

use std::process::ExitCode;

use crate::config::Config;
use crate::doctor::{self, Check, Setup, probe};

pub async fn run(config: &Config, json: bool) -> ExitCode {
    let from_domain = config.from.email.domain().to_ascii_lowercase();
    let setup = Setup {
        envelope_domain: doctor::envelope_domain(
            &from_domain,
            config.bounce.as_ref().map(|verp| verp.domain()),
        ),
        from_domain,
        dkim: config.dkim.clone(),
        public_url: config.public_url.clone(),
        postal_address: config.postal_address.clone(),
        real_relay: config.smtp.is_some(),
    };
    let resolver = match probe::resolver(config.doctor_nameserver) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("squeeze: {e}.");
            return ExitCode::from(1);
        }
    };
    let answers = probe::answers(&resolver, &setup).await;
    let mut checks = doctor::dns_checks(&setup, &answers);
    checks.push(doctor::check_public_url(&setup.public_url));
    let url = probe::unsubscribe_url(&setup.public_url);
    let outcome = probe::one_click(&url).await;
    checks.push(doctor::check_unsubscribe(&url, &outcome));
    checks.push(doctor::check_postal_address(
        setup.postal_address.as_deref(),
        setup.real_relay,
    ));
    if json {
        super::print_json(&checks);
    } else {
        print!("{}", table(&checks));
    }
    if doctor::any_fail(&checks) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The report as a table: check | result | detail | fix.
fn table(checks: &[Check]) -> String {
    let width = |f: fn(&Check) -> &str, title: &str| {
        checks
            .iter()
            .map(|c| f(c).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let w_check = width(|c| &c.check, "check");
    let w_detail = width(|c| &c.detail, "detail");
    let mut out = format!(
        "{:w_check$}  {:6}  {:w_detail$}  fix\n",
        "check", "result", "detail"
    );
    for c in checks {
        out.push_str(
            format!(
                "{:w_check$}  {:6}  {:w_detail$}  {}",
                c.check,
                c.result.as_str(),
                c.detail,
                c.fix
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}
