//! `ci/install-deps.sh` for a user who is not root (issue 18 item 10): it runs itself again
//! under `sudo`, and says clearly what to do when there is no `sudo`. The script runs for real,
//! as a non-root uid (`nobody` when the tests run as root, as CI does; else the test's own
//! uid), with stub `sudo` and `apt-get` on `PATH` that record how they were called: no package
//! is installed.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `nobody`/`nogroup` on Debian.
const NOBODY: u32 = 65534;

fn uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("no /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("no effective uid in /proc/self/status")
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).expect("cannot write a stub");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A copy of the script in a directory anyone may read, a `bin/` of stubs, and an `out/`
/// anyone may write for what the stubs record.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(with_sudo: bool) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for d in ["ci", "bin", "out"] {
            std::fs::create_dir(root.join(d)).expect("mkdir");
        }
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(root.join("out"), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/install-deps.sh");
        std::fs::copy(&script, root.join("ci/install-deps.sh")).expect("copy the script");
        let out = root.join("out");
        // apt-get records that it ran, and as whom, and fails as it would without root.
        write_exec(
            &root.join("bin/apt-get"),
            &format!(
                "#!/bin/sh\necho \"apt-get $* as $(/usr/bin/id -u)\" >> {}/apt-get\nexit 100\n",
                out.display()
            ),
        );
        if with_sudo {
            // sudo records its arguments, one a line, and succeeds without running them.
            write_exec(
                &root.join("bin/sudo"),
                &format!(
                    "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > {}/sudo\nexit 0\n",
                    out.display()
                ),
            );
        }
        Setup { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn script(&self) -> PathBuf {
        self.root().join("ci/install-deps.sh")
    }

    /// Runs `bash ci/install-deps.sh` from the copy's root as a non-root uid, with `path` as
    /// `PATH`.
    fn run(&self, path: &str) -> Output {
        let mut cmd = Command::new("/bin/bash");
        cmd.arg("ci/install-deps.sh")
            .current_dir(self.root())
            .env_clear()
            .env("PATH", path)
            .env("HOME", "/");
        if uid() == 0 {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        cmd.output().expect("cannot run bash")
    }

    fn recorded(&self, stub: &str) -> Option<String> {
        std::fs::read_to_string(self.root().join("out").join(stub)).ok()
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_user_who_is_not_root_runs_the_script_again_under_sudo() {
    let s = Setup::new(true);
    let bin = s.root().join("bin");
    let out = s.run(&format!("{}:/usr/bin:/bin", bin.display()));
    assert_eq!(
        s.recorded("apt-get"),
        None,
        "apt-get ran as a user who is not root, not under sudo: {}",
        show(&out)
    );
    let args = s.recorded("sudo").unwrap_or_else(|| {
        panic!(
            "install-deps did not run itself again under sudo: {}",
            show(&out)
        )
    });
    let args: Vec<&str> = args.lines().collect();
    let script = s.script();
    assert_eq!(
        args,
        ["bash", script.to_str().expect("utf-8 path")],
        "sudo was asked to run something else: {}",
        show(&out)
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn without_root_or_sudo_the_script_fails_clearly_and_installs_nothing() {
    let s = Setup::new(false);
    // Only the stubs' directory: no sudo anywhere on PATH.
    let out = s.run(s.root().join("bin").to_str().expect("utf-8 path"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(s.recorded("apt-get"), None, "{}", show(&out));
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stderr.contains("root") && stderr.contains("sudo"),
        "the refusal does not say what to do: {}",
        show(&out)
    );
}
