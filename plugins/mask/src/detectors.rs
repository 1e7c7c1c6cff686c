//! The detector table: every built-in detector's name, host pattern, masked capture group,
//! host-side check, default label and whether it is on by default. The descriptor's
//! `patterns`, configuration validation and plan building all read [`DETECTORS`]; a detector's
//! pattern index is its position in the table.
//!
//! The table is ordered from the most specific detector to the most generic. Plans list the
//! detectors' edits in this order, and the host rewrites overlapping matches with the earliest
//! edit's strategy, so a JWT after `Bearer ` is labelled `JWT` and a PEM block `PRIVATE_KEY`,
//! not `BEARER_TOKEN` or `SECRET`; IBANs and phone numbers come before cards, whose loose shape
//! (12 to 19 digits) can match inside them and pass Luhn by chance.
//!
//! Pattern rules (the host compiles them with the Rust `regex` crate, which has no look-around
//! and no backreferences, and runs each over the whole body, up to megabytes):
//! - ASCII classes (`[0-9]`, never `\d`) and ASCII word boundaries (`(?-u:\b)`), which keep the
//!   host's searches on its fast DFA whatever the body's characters.
//! - Context that must match but not be masked (`sig=`, `Bearer `, the character before a
//!   storage key) stays outside capture group 1, which is then the masked group.
//! - `^` only where a value must be recognised at the start of a JSON string with no look-behind
//!   to spare (`azure-storage-key`); the host searches every string value separately for such
//!   patterns, a small cost.
//! - Checksums and entropy are the host's (`check`): the patterns find candidates only.

/// Which test the host runs on each match before masking it (the configuration supplies the
/// entropy threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// Mask every match.
    None,
    /// Luhn checksum (payment cards).
    Luhn,
    /// ISO 13616 mod-97 (IBANs).
    Iban,
    /// Shannon entropy at least the configured `min_entropy` bits per character.
    MinEntropy,
}

/// One built-in detector.
#[derive(Debug, Clone, Copy)]
pub struct Detector {
    /// The configuration key and the finding kind.
    pub name: &'static str,
    /// The host pattern (Rust `regex` syntax).
    pub pattern: &'static str,
    /// The capture group the host masks (0: the whole match).
    pub group: u32,
    /// The host-side test of each match.
    pub check: CheckKind,
    /// The default `redact`/`hash` label.
    pub label: &'static str,
    /// On when the configuration does not mention it.
    pub default_on: bool,
}

/// Every detector, in pattern-index order.
pub const DETECTORS: &[Detector] = &[
    // A whole PEM block; the body allows the characters of base64, encryption headers
    // (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: AES-128-CBC,...`), newlines and `\n` escapes (a
    // JSON document served as text), and is lazy so that two blocks stay two matches.
    Detector {
        name: "private-key",
        pattern: r"-----BEGIN[A-Z ]{0,32}PRIVATE KEY-----[A-Za-z0-9+/=:,.\\ \t\r\n-]*?-----END[A-Z ]{0,32}PRIVATE KEY-----",
        group: 0,
        check: CheckKind::None,
        label: "PRIVATE_KEY",
        default_on: true,
    },
    // Header and payload are base64url JSON objects (`{"` is `eyJ`); the signature may be
    // empty (`alg: none`).
    Detector {
        name: "jwt",
        pattern: r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
        group: 0,
        check: CheckKind::None,
        label: "JWT",
        default_on: true,
    },
    // The secret of an Azure connection string (storage, Service Bus, Event Hubs, SAS), up to
    // the next `;`, quote, angle bracket or whitespace. `SharedAccessKeyName=` is not matched.
    Detector {
        name: "azure-connection-string",
        pattern: r#"(?i:AccountKey|SharedAccessKey|SharedAccessSignature)=([^;"'<>\s]+)"#,
        group: 1,
        check: CheckKind::None,
        label: "AZURE_SECRET",
        default_on: true,
    },
    // The `sig` query parameter of a SAS URL (also after `&amp;` in XML/HTML), up to the next
    // parameter, fragment (`\x23`: a literal `#` would make the host treat the pattern as
    // possibly commented and search every string on its own), quote or whitespace.
    Detector {
        name: "sas-signature",
        pattern: r#"[?&;](?i:sig)=([^&;\x23"'<>\s]+)"#,
        group: 1,
        check: CheckKind::None,
        label: "SAS_SIGNATURE",
        default_on: true,
    },
    // A storage account key: 64 bytes in base64 (86 characters and `==`), starting a base64 run
    // (no look-behind: the character before is matched outside the group).
    Detector {
        name: "azure-storage-key",
        pattern: r"(?:^|[^A-Za-z0-9+/])([A-Za-z0-9+/]{86}==)",
        group: 1,
        check: CheckKind::None,
        label: "AZURE_STORAGE_KEY",
        default_on: true,
    },
    Detector {
        name: "aws-access-key",
        pattern: r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
        group: 0,
        check: CheckKind::None,
        label: "AWS_ACCESS_KEY",
        default_on: true,
    },
    // The token after `Bearer ` (RFC 6750 `b64token`), at least 16 characters so that prose
    // ("the bearer of ...") is left alone.
    Detector {
        name: "bearer-token",
        pattern: r"(?-u:\b)(?i:bearer)[ \t]+([A-Za-z0-9._~+/-]{16,}=*)",
        group: 1,
        check: CheckKind::None,
        label: "BEARER_TOKEN",
        default_on: true,
    },
    Detector {
        name: "email",
        pattern: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}",
        group: 0,
        check: CheckKind::None,
        label: "EMAIL",
        default_on: true,
    },
    // Country, check digits, then 11 to 30 letters or digits, compact or in groups of four;
    // the host keeps only those passing mod 97.
    Detector {
        name: "iban",
        pattern: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?-u:\b)",
        group: 0,
        check: CheckKind::Iban,
        label: "IBAN",
        default_on: true,
    },
    // Conservative: `+` international numbers (7 to 17 digits, single space, dot or dash
    // separators, one parenthesised group, not after a letter or digit so that semver build
    // metadata `1.0.0+20260101` is left alone), and North American numbers written with
    // separators: `(415) 555-0132`, `415-555-0132`, `415.555.0132`. Dates, times, UUIDs,
    // versions, IPv4 addresses and bare digit runs have none of these shapes.
    Detector {
        name: "phone",
        pattern: r"(?-u:\B)\+[1-9][0-9]{0,3}(?:[ .-]?\([0-9]{1,4}\))?(?:[ .-]?[0-9]){6,13}(?-u:\b)|(?-u:\B)\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[ .-][0-9]{4}(?-u:\b)|(?-u:\b)[2-9][0-9]{2}(?:-[2-9][0-9]{2}-|\.[2-9][0-9]{2}\.)[0-9]{4}(?-u:\b)",
        group: 0,
        check: CheckKind::None,
        label: "PHONE",
        default_on: true,
    },
    // 12 to 19 digits, single spaces or dashes between them, not inside a longer word or digit
    // run; the host keeps only those passing Luhn. The first digit is a card network's (2 to 6:
    // Mastercard, Amex, Diners, JCB, Visa, Discover, UnionPay, Maestro), which leaves
    // millisecond timestamps (`1764371683000`) and most other long ids alone.
    Detector {
        name: "card",
        pattern: r"(?-u:\b)[2-6](?:[ -]?[0-9]){11,18}(?-u:\b)",
        group: 0,
        check: CheckKind::Luhn,
        label: "CARD",
        default_on: true,
    },
    // US social security numbers, dashed form only (a bare 9-digit run is any id).
    Detector {
        name: "ssn",
        pattern: r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)",
        group: 0,
        check: CheckKind::None,
        label: "SSN",
        default_on: false,
    },
    Detector {
        name: "ipv4",
        pattern: r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?-u:\b)",
        group: 0,
        check: CheckKind::None,
        label: "IP",
        default_on: true,
    },
    // Full (eight groups) and `::`-compressed forms with at least one group before the `::`
    // (`fe80::1`, `2001:db8::`); `::1` and `::` alone are not matched. Needing eight groups or
    // a `::` keeps times (`23:14:43`) and MAC addresses out.
    Detector {
        name: "ipv6",
        pattern: r"(?-u:\b)(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}(?-u:\b)|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5}::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5}(?-u:\b)|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){1,6}::)",
        group: 0,
        check: CheckKind::None,
        label: "IP",
        default_on: true,
    },
    // Long base64-ish runs; the host keeps those of high entropy (hex digests have at most
    // 4 bits per character, so the default 4.3 leaves them alone). `-` is not in the class,
    // so a UUID is never one run.
    Detector {
        name: "high-entropy",
        pattern: r"[A-Za-z0-9+/_]{32,}=*",
        group: 0,
        check: CheckKind::MinEntropy,
        label: "SECRET",
        default_on: false,
    },
];

/// The detector called `name` and its pattern index.
pub fn find(name: &str) -> Option<(usize, &'static Detector)> {
    DETECTORS.iter().enumerate().find(|(_, d)| d.name == name)
}

/// Every detector's name, in table order, for error messages.
pub fn names() -> String {
    DETECTORS
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every pattern, in table order (the descriptor's `patterns`).
pub fn patterns() -> Vec<&'static str> {
    DETECTORS.iter().map(|d| d.pattern).collect()
}
