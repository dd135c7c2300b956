//! Fuzz harness of keywardd's configuration parser (issue 15 item 7), built only for the fuzz
//! targets (`cfg(fuzzing)`, see `fuzz/`) and for the unit test that replays the committed
//! corpus (`fuzz/corpus/config/`) in CI.

use super::{Config, PinSource};
use std::path::Path;

/// One input: the text of keyward.toml (lossy UTF-8). [`Config::parse`] either refuses it
/// with a one-line message or gives a configuration that holds its documented invariants.
pub fn daemon_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let base = Path::new("/etc/keyward");
    match Config::parse(&text, base) {
        Ok(c) => {
            assert!(!c.token_label.is_empty() && c.token_label.len() <= 32);
            assert_ne!(c.admin_socket, c.client_socket);
            for p in [&c.store_path, &c.admin_socket, &c.client_socket] {
                assert!(p.is_absolute(), "{} is relative", p.display());
            }
            match &c.pin {
                PinSource::File(f) => assert!(f.is_absolute()),
                PinSource::Env(v) => assert!(!v.is_empty()),
            }
            assert!(c.destroy_check_secs >= 1 && c.limits.max_connections >= 1);
            assert!(c.audit_checkpoint_secs >= 1);
        }
        Err(e) => assert!(!e.0.contains('\n'), "a message of several lines: {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    /// Replays the keywardd half of `fuzz/corpus/config/` (files whose first byte is even,
    /// as the `config` target dispatches them).
    #[test]
    fn corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            if let Some((&mode, rest)) = data.split_first() {
                if mode % 2 == 0 {
                    super::daemon_config(rest);
                    n += 1;
                }
            }
        }
        assert!(n >= 10, "only {n} keywardd-config corpus files");
    }
}
