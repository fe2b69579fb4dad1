//! Which commands carry a script too long for argv, and what remains of
//! their argv without it. The kernel refuses an argument over 128 KiB, so
//! a `-c` script past [`INLINE_SCRIPT`] is handed to its interpreter as a
//! file instead: by the agent as an in-memory file, by the docker provider
//! as a file it writes into the container. Both follow this one rule.

/// Scripts up to this size stay in argv, as sent.
pub const INLINE_SCRIPT: usize = 64 * 1024;

/// A `-c` script taken out of its argv.
#[derive(Debug, PartialEq, Eq)]
pub struct LongScript {
    pub interpreter: String,
    pub script: String,
    /// What followed `-c script name`: the script's `$1…`. The `name`
    /// that `-c` makes `$0` is dropped; the file's path takes its place.
    pub args: Vec<String>,
}

/// The long `-c` script of `argv`, or `argv` as it was.
pub fn take_long_script(argv: Vec<String>) -> Result<LongScript, Vec<String>> {
    if !(argv.len() >= 3 && argv[1] == "-c" && argv[2].len() > INLINE_SCRIPT) {
        return Err(argv);
    }
    let mut parts = argv.into_iter();
    let interpreter = parts.next().unwrap_or_default();
    let script = parts.nth(1).unwrap_or_default();
    let _zeroth = parts.next();
    Ok(LongScript {
        interpreter,
        script,
        args: parts.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn short_scripts_and_other_commands_stay() {
        let short = argv(&["/bin/sh", "-c", "echo hi"]);
        assert_eq!(take_long_script(short.clone()), Err(short));
        let long_arg = vec!["echo".to_owned(), "x".repeat(INLINE_SCRIPT + 1)];
        assert_eq!(take_long_script(long_arg.clone()), Err(long_arg));
    }

    #[test]
    fn a_long_script_is_taken_out_with_its_arguments() {
        let script = "y".repeat(INLINE_SCRIPT + 1);
        let taken = take_long_script(argv(&["python3", "-c", &script, "name", "a", "b"]));
        assert_eq!(
            taken,
            Ok(LongScript {
                interpreter: "python3".into(),
                script: script.clone(),
                args: argv(&["a", "b"]),
            })
        );
        let bare = take_long_script(argv(&["sh", "-c", &script])).expect("taken");
        assert!(bare.args.is_empty());
    }
}
