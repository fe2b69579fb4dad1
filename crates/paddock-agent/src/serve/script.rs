//! Long `-c` scripts. The kernel refuses an argument over 128 KiB
//! (`MAX_ARG_STRLEN`) and a command line over its stack budget (E2BIG), and
//! agents send generated programs of megabytes. Such a script is handed to
//! its interpreter as a file instead: an in-memory file (memfd, charged to
//! the sandbox like any of its memory) that only this child inherits, named
//! in its argv by `/proc/self/fd/N`. `sh`, `bash` and `python3` read a
//! program from a path as they would from `-c`; the differences are that
//! `$0` (`sys.argv[0]`) is that path, and the argument after the script,
//! which `-c` makes `$0`, is dropped so that `$1…` stay what they were.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::memfd::{memfd_create, MFdFlags};

use paddock_agent_protocol::script::take_long_script;

/// A command ready to spawn: its argv, and the script file its child must
/// inherit (kept open until the child has been spawned).
pub(crate) struct Prepared {
    pub argv: Vec<String>,
    pub script: Option<OwnedFd>,
}

impl Prepared {
    /// The descriptor the child keeps across `execve`.
    pub(crate) fn inherited_fd(&self) -> Option<RawFd> {
        self.script.as_ref().map(AsRawFd::as_raw_fd)
    }
}

/// Moves a long `-c` script out of `argv`; any other argv is returned as
/// it is (an argument the kernel refuses then fails the spawn with E2BIG,
/// which the caller reports).
pub(crate) fn prepare(argv: Vec<String>) -> io::Result<Prepared> {
    let long = match take_long_script(argv) {
        Ok(long) => long,
        Err(argv) => return Ok(Prepared { argv, script: None }),
    };
    let fd = memfd_create(c"paddock-script", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(long.script.as_bytes())?;
    let fd = OwnedFd::from(file);
    let mut argv = vec![
        long.interpreter,
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
    ];
    argv.extend(long.args);
    Ok(Prepared {
        argv,
        script: Some(fd),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn short_commands_are_untouched() {
        let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), "echo hi".to_owned()];
        let p = prepare(argv.clone()).expect("prepare");
        assert_eq!(p.argv, argv);
        assert!(p.script.is_none());
    }

    #[test]
    fn a_long_script_becomes_a_file_named_in_argv() {
        let script = "echo x\n".repeat(20_000);
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            script.clone(),
            "name".to_owned(),
            "one".to_owned(),
        ];
        let p = prepare(argv).expect("prepare");
        let fd = p.inherited_fd().expect("a script fd");
        assert_eq!(p.argv, ["/bin/sh", &format!("/proc/self/fd/{fd}"), "one"]);
        let mut file = std::fs::File::from(p.script.expect("fd"));
        file.rewind().expect("rewind");
        let mut read = String::new();
        file.read_to_string(&mut read).expect("read");
        assert_eq!(read, script);
    }
}
