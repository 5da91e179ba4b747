//! DMARC's relaxed alignment (RFC 7489, 3.1): two domains align when they share an
//! organisational domain, the registrable domain under the Public Suffix List (the `psl`
//! crate, which compiles the list in).

/// The organisational domain of `domain`: `news.example.co.uk` -> `example.co.uk`. A name
/// the list does not know ends in its last label as the suffix (the list's `*` rule); a bare
/// suffix is its own organisational domain.
pub fn organisational_domain(domain: &str) -> String {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    match psl::domain_str(&domain) {
        Some(org) => org.to_owned(),
        None => domain,
    }
}

/// Whether a DKIM `d=` (or SPF's envelope domain) aligns with the From domain, relaxed.
pub fn aligned_relaxed(domain: &str, from_domain: &str) -> bool {
    organisational_domain(domain) == organisational_domain(from_domain)
}

/// Whether they align under strict alignment (`adkim=s` / `aspf=s`): the same name.
pub fn aligned_strict(domain: &str, from_domain: &str) -> bool {
    domain
        .trim_end_matches('.')
        .eq_ignore_ascii_case(from_domain.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_of_one_organisation_align_and_neighbours_under_a_public_suffix_do_not() {
        assert!(aligned_relaxed("mail.example.com", "example.com"));
        assert!(aligned_relaxed("Example.COM", "news.example.com"));
        assert!(aligned_relaxed("a.example.co.uk", "b.example.co.uk"));
        assert!(!aligned_relaxed("example.co.uk", "other.co.uk"));
        assert!(!aligned_relaxed("co.uk", "example.co.uk"));
        assert!(!aligned_relaxed("evil.github.io", "good.github.io"));
        assert!(!aligned_relaxed("example.net", "example.com"));
        assert!(aligned_relaxed(
            "squeeze.localhost",
            "news.squeeze.localhost"
        ));
        assert!(aligned_strict("example.com.", "EXAMPLE.com"));
        assert!(!aligned_strict("mail.example.com", "example.com"));
    }
}
