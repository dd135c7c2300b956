//! Fuzz harness of the module's configuration parsing (issue 15 item 7), built only for the
//! fuzz targets (`cfg(fuzzing)`, see `fuzz/`) and for the unit test that replays the
//! committed corpus (`fuzz/corpus/config/`) in CI.

use super::{parse_file, parse_reserved, parse_token, parse_tokens, Config, MAX_LABEL_LEN};
use std::path::Path;

/// One input: `pReserved`, `KEYWARD_TOKENS` and the text of `module.toml`, separated by NUL
/// bytes (missing parts are unset). Runs each parser on its part, then the whole of
/// [`Config::load`] with the file text in place of the file system.
pub fn module_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let reserved = parts.next();
    let tokens = parts.next().map(str::to_owned);
    let file = parts.next().map(str::to_owned);
    if let Some(r) = reserved {
        let _ = parse_reserved(r);
    }
    if let Some(t) = &tokens {
        check_tokens(t.split(','));
        for entry in t.split(',') {
            if let Ok(tok) = parse_token(entry) {
                check_token(&tok);
            }
        }
    }
    if let Some(f) = &file {
        if let Ok(settings) = parse_file(Path::new("module.toml"), f) {
            check_tokens(settings.tokens.iter().flatten().map(String::as_str));
        }
    }
    load(reserved, tokens.as_deref(), file.as_deref());
}

/// [`Config::load`] of `reserved` with `KEYWARD_TOKENS` = `tokens`, and `file` as the text of
/// any config file it reads (none if `None`). Also called by the ffi harness with the
/// `pReserved` string `C_Initialize` read.
pub fn load(reserved: Option<&str>, tokens: Option<&str>, file: Option<&str>) {
    let env = |k: &str| match k {
        "KEYWARD_TOKENS" => tokens.map(str::to_owned),
        _ => None,
    };
    let read = |path: &Path, required: bool| match file {
        Some(text) => parse_file(path, text),
        None if required => Err(super::ConfigError::File {
            path: path.to_owned(),
            message: "no such file".into(),
        }),
        None => Ok(Default::default()),
    };
    if let Ok(config) = Config::load_with(reserved, &env, &read) {
        let mut rings: Vec<&str> = config.tokens.iter().map(|t| t.ring.as_str()).collect();
        config.tokens.iter().for_each(check_token);
        rings.sort_unstable();
        rings.dedup();
        assert_eq!(rings.len(), config.tokens.len(), "a ring listed twice");
    }
}

fn check_tokens<'a>(entries: impl Iterator<Item = &'a str>) {
    if let Ok(list) = parse_tokens(entries) {
        list.iter().for_each(check_token);
    }
}

fn check_token(t: &keyward_wire::pkcs11::ConfiguredToken) {
    assert!(!t.label.is_empty() && t.label.len() <= MAX_LABEL_LEN);
    assert!(t.ring.contains("/keyRings/"));
}

#[cfg(test)]
mod tests {
    /// Replays the module-config half of `fuzz/corpus/config/` (files whose first byte is
    /// odd, as the `config` target dispatches them).
    #[test]
    fn corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            if let Some((&mode, rest)) = data.split_first() {
                if mode % 2 == 1 {
                    super::module_config(rest);
                    n += 1;
                }
            }
        }
        assert!(n >= 10, "only {n} module-config corpus files");
    }
}
