//! Inline Dockerfiles: the instructions paddock builds (`FROM`, `RUN`,
//! `ENV`, `WORKDIR`, `USER`, `ARG`, `LABEL`, `CMD`, `ENTRYPOINT`, and
//! `COPY` from a heredoc or from the files sent with the build). Any other
//! instruction is an error naming its line. Written by hand: the grammar
//! is a dozen rules, and the crates for it parse far more than paddock can
//! build.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From(String),
    Run(String),
    Env(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Arg(String, Option<String>),
    Label(Vec<(String, String)>),
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    /// A file written from a heredoc.
    Copy {
        dest: String,
        content: String,
        mode: Option<u32>,
    },
    /// A file or directory of the build's context (files sent with the
    /// build: there is no context directory on the server).
    CopyContext {
        src: String,
        dest: String,
        mode: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the instruction.
    pub line: usize,
    /// The instruction as written (continuations joined), for logs and
    /// the build cache's key.
    pub text: String,
    pub instruction: Instruction,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Splits words, honouring double and single quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut has = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn key_values(
    line: usize,
    args: &str,
    legacy_space_form: bool,
) -> Result<Vec<(String, String)>, ParseError> {
    let ws = words(args);
    if legacy_space_form && ws.len() >= 2 && !ws[0].contains('=') {
        let (k, v) = args
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((args, ""));
        return Ok(vec![(k.to_owned(), v.trim().to_owned())]);
    }
    ws.into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| err(line, format!("expected KEY=VALUE, got {w:?}")))
        })
        .collect()
}

/// JSON array form, or shell form run with `/bin/sh -c`.
fn command_form(args: &str) -> Vec<String> {
    let t = args.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return v;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), t.to_owned()]
}

pub fn parse(text: &str) -> Result<Vec<Step>, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i + 1;
        let trimmed = lines[i].trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let mut joined = String::new();
        loop {
            let l = lines[i].trim_end();
            i += 1;
            match l.strip_suffix('\\') {
                Some(head) if i < lines.len() => {
                    joined.push_str(head);
                    joined.push(' ');
                }
                _ => {
                    joined.push_str(l);
                    break;
                }
            }
        }
        let joined = joined.trim().to_owned();
        let (keyword, args) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((&joined, ""));
        let args = args.trim();
        let instruction = match keyword.to_ascii_uppercase().as_str() {
            "FROM" => {
                let image = words(args)
                    .into_iter()
                    .next()
                    .ok_or_else(|| err(start, "FROM needs an image"))?;
                Instruction::From(image)
            }
            "RUN" if !args.is_empty() => Instruction::Run(args.to_owned()),
            "ENV" => Instruction::Env(key_values(start, args, true)?),
            "LABEL" => Instruction::Label(key_values(start, args, false)?),
            "WORKDIR" if args.starts_with('/') => Instruction::Workdir(args.to_owned()),
            "WORKDIR" => return Err(err(start, "WORKDIR must be an absolute path")),
            "USER" if !args.is_empty() => Instruction::User(args.to_owned()),
            "ARG" if !args.is_empty() => match args.split_once('=') {
                Some((k, v)) => {
                    Instruction::Arg(k.to_owned(), Some(v.trim_matches('"').to_owned()))
                }
                None => Instruction::Arg(args.to_owned(), None),
            },
            "CMD" => Instruction::Cmd(command_form(args)),
            "ENTRYPOINT" => Instruction::Entrypoint(command_form(args)),
            "COPY" => {
                let mut mode = None;
                let mut rest = Vec::new();
                for w in words(args) {
                    match w.strip_prefix("--chmod=") {
                        Some(m) => {
                            mode = Some(
                                u32::from_str_radix(m, 8)
                                    .map_err(|_| err(start, format!("bad --chmod {m:?}")))?,
                            )
                        }
                        None => rest.push(w),
                    }
                }
                let (Some(src), Some(dest)) = (rest.first(), rest.get(1)) else {
                    return Err(err(start, "COPY needs a source and a destination"));
                };
                match src.strip_prefix("<<") {
                    None if rest.len() > 2 => {
                        return Err(err(
                            start,
                            "COPY from the build's context takes one source and a destination",
                        ))
                    }
                    None => Instruction::CopyContext {
                        src: src.clone(),
                        dest: dest.clone(),
                        mode,
                    },
                    Some(marker) => {
                        let marker = marker.trim_matches(|c| c == '"' || c == '\'');
                        let mut content = String::new();
                        loop {
                            let Some(l) = lines.get(i) else {
                                return Err(err(
                                    start,
                                    format!("heredoc {marker:?} is not closed"),
                                ));
                            };
                            i += 1;
                            if l.trim_end() == marker {
                                break;
                            }
                            content.push_str(l);
                            content.push('\n');
                        }
                        Instruction::Copy {
                            dest: dest.clone(),
                            content,
                            mode,
                        }
                    }
                }
            }
            "RUN" | "USER" | "ARG" => {
                return Err(err(start, format!("{keyword} needs an argument")))
            }
            other => return Err(err(start, format!("unsupported instruction {other}"))),
        };
        if steps.is_empty() && !matches!(instruction, Instruction::From(_) | Instruction::Arg(..)) {
            return Err(err(start, "the first instruction must be FROM"));
        }
        steps.push(Step {
            line: start,
            text: joined,
            instruction,
        });
    }
    if !steps
        .iter()
        .any(|s| matches!(s.instruction, Instruction::From(_)))
    {
        return Err(err(1, "no FROM instruction"));
    }
    Ok(steps)
}

/// `$NAME` and `${NAME}` replaced from `vars`; unknown names become empty.
pub fn substitute(s: &str, vars: &[(String, String)]) -> String {
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            chars.next();
            let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
            out.push_str(&lookup(&name));
        } else {
            let mut name = String::new();
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' {
                    name.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() {
                out.push('$');
            } else {
                out.push_str(&lookup(&name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_instruction() {
        let steps = parse(
            "# a comment\nARG V=1\nFROM reg:5000/base:v1 AS b\nRUN echo a \\\n  && echo b\nENV A=1 B=\"two words\"\nENV C three\nWORKDIR /app\nUSER app:app\nLABEL k=v\nCOPY --chmod=755 <<EOF /app/run.sh\n#!/bin/sh\necho hi\nEOF\nCMD [\"/app/run.sh\"]\nENTRYPOINT echo x\n",
        )
        .expect("valid");
        let kinds: Vec<_> = steps.iter().map(|s| s.instruction.clone()).collect();
        assert_eq!(kinds[0], Instruction::Arg("V".into(), Some("1".into())));
        assert_eq!(kinds[1], Instruction::From("reg:5000/base:v1".into()));
        assert_eq!(kinds[2], Instruction::Run("echo a    && echo b".into()));
        assert_eq!(steps[2].line, 4);
        assert_eq!(
            kinds[3],
            Instruction::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into())
            ])
        );
        assert_eq!(
            kinds[4],
            Instruction::Env(vec![("C".into(), "three".into())])
        );
        assert_eq!(
            kinds[8],
            Instruction::Copy {
                dest: "/app/run.sh".into(),
                content: "#!/bin/sh\necho hi\n".into(),
                mode: Some(0o755)
            }
        );
        assert_eq!(kinds[9], Instruction::Cmd(vec!["/app/run.sh".into()]));
        assert_eq!(
            kinds[10],
            Instruction::Entrypoint(vec!["/bin/sh".into(), "-c".into(), "echo x".into()])
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("FROM x\n\nEXPOSE 80\n").map_err(|e| e.line), Err(3));
        assert!(parse("FROM x\nCOPY a b /dst\n")
            .expect_err("one source")
            .message
            .contains("one source"));
        assert_eq!(
            parse("FROM x\nCOPY --chmod=755 app/run.sh /srv/\n").expect("context copy")[1]
                .instruction,
            Instruction::CopyContext {
                src: "app/run.sh".into(),
                dest: "/srv/".into(),
                mode: Some(0o755),
            }
        );
        assert_eq!(parse("RUN true\n").map_err(|e| e.line), Err(1));
        assert!(parse("FROM x\nCOPY <<EOF /f\nno end\n").is_err());
        assert!(parse("FROM x\nWORKDIR relative\n").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn substitutes_variables() {
        let vars = vec![
            ("A".to_owned(), "1".to_owned()),
            ("HOME".to_owned(), "/h".to_owned()),
        ];
        assert_eq!(substitute("$A-${HOME}/x $$ $NOPE.", &vars), "1-/h/x $$ .");
    }
}
