//! Lexer: condition text to tokens, each with its byte span in the condition.

use super::{excerpt, Diag};

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// A number literal.
    Number(f64),
    /// A string literal, escapes decoded.
    Str(String),
    /// A (possibly dotted) name: a feature or a function.
    Ident(String),
    True,
    False,
    In,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    OrOr,
    AndAnd,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Bang,
    /// End of the condition.
    Eof,
}

/// A token and where it is.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Token {
    /// How a message names this token: "end of condition", "number `3`", "`)`".
    pub(super) fn describe(&self, source: &str) -> String {
        let text = excerpt(source.get(self.start..self.end).unwrap_or(""));
        match self.tok {
            Tok::Eof => "end of condition".to_owned(),
            Tok::Number(_) => format!("number `{text}`"),
            Tok::Str(_) => format!("string {text}"),
            Tok::Ident(_) => format!("name `{text}`"),
            _ => format!("`{text}`"),
        }
    }
}

/// Splits a condition into tokens; the last one is always [`Tok::Eof`].
pub(super) fn lex(source: &str) -> Result<Vec<Token>, Diag> {
    let mut lexer = Lexer { source, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_whitespace();
        let start = lexer.pos;
        let Some(c) = lexer.peek() else {
            tokens.push(Token {
                tok: Tok::Eof,
                start,
                end: start,
            });
            return Ok(tokens);
        };
        let tok = match c {
            '0'..='9' => lexer.number()?,
            '"' | '\'' => lexer.string(c)?,
            c if c.is_ascii_alphabetic() || c == '_' => lexer.ident()?,
            _ => lexer.operator(c)?,
        };
        tokens.push(Token {
            tok,
            start,
            end: lexer.pos,
        });
    }
}

struct Lexer<'s> {
    source: &'s str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.source.get(self.pos..)?.chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.source.get(self.pos..)?.chars();
        chars.next();
        chars.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn eat_while(&mut self, keep: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&keep) {
            self.bump();
        }
    }

    fn skip_whitespace(&mut self) {
        self.eat_while(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    }

    fn text_from(&self, start: usize) -> &str {
        self.source.get(start..self.pos).unwrap_or("")
    }

    /// `12`, `2.5`, `1e3`, `1.5E-2`. Anything glued to a number (`1.`, `3abc`, `1.2.3`) is an
    /// error rather than two tokens, so a typo is reported where it is.
    fn number(&mut self) -> Result<Tok, Diag> {
        let start = self.pos;
        let bad = |lexer: &mut Self, why: &str| {
            lexer.eat_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            Diag::new(
                start,
                format!("invalid number `{}`{why}", excerpt(lexer.text_from(start))),
            )
        };
        self.eat_while(|c| c.is_ascii_digit());
        if self.peek() == Some('.') {
            self.bump();
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(bad(self, ": expected a digit after `.`"));
            }
            self.eat_while(|c| c.is_ascii_digit());
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(bad(self, ": expected digits in the exponent"));
            }
            self.eat_while(|c| c.is_ascii_digit());
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(bad(self, ""));
        }
        let text = self.text_from(start);
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Tok::Number(v)),
            _ => Err(Diag::new(
                start,
                format!("number `{}` is out of range", excerpt(text)),
            )),
        }
    }

    /// A string in `"` or `'`, with escapes `\"` `\'` `\\` `\n` `\t`.
    fn string(&mut self, quote: char) -> Result<Tok, Diag> {
        let start = self.pos;
        self.bump();
        let mut value = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(Diag::new(start, "unterminated string")),
                Some(c) if c == quote => return Ok(Tok::Str(value)),
                Some('\\') => match self.bump() {
                    Some('"') => value.push('"'),
                    Some('\'') => value.push('\''),
                    Some('\\') => value.push('\\'),
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other) => {
                        return Err(Diag::new(
                            at,
                            format!(
                                "invalid escape `\\{}` in string (use \\\" \\' \\\\ \\n or \\t)",
                                other.escape_debug()
                            ),
                        ))
                    }
                    None => return Err(Diag::new(start, "unterminated string")),
                },
                Some(c) => value.push(c),
            }
        }
    }

    /// A name: segments of letters, digits and `_` joined by `.` (`card.count_1m`), or one of
    /// the keywords `true`, `false`, `in`.
    fn ident(&mut self) -> Result<Tok, Diag> {
        let start = self.pos;
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        self.eat_while(word);
        while self.peek() == Some('.') {
            if !self.peek_second().is_some_and(word) {
                self.bump();
                return Err(Diag::new(
                    start,
                    format!(
                        "invalid name `{}`: expected a name after `.`",
                        excerpt(self.text_from(start))
                    ),
                ));
            }
            self.bump();
            self.eat_while(word);
        }
        Ok(match self.text_from(start) {
            "true" => Tok::True,
            "false" => Tok::False,
            "in" => Tok::In,
            name => Tok::Ident(name.to_owned()),
        })
    }

    fn operator(&mut self, c: char) -> Result<Tok, Diag> {
        let start = self.pos;
        self.bump();
        let doubled = |lexer: &mut Self, tok: Tok, hint: &str| {
            if lexer.eat(c) {
                Ok(tok)
            } else {
                Err(Diag::new(
                    start,
                    format!("unexpected `{c}`, did you mean `{hint}`?"),
                ))
            }
        };
        match c {
            '(' => Ok(Tok::LParen),
            ')' => Ok(Tok::RParen),
            '[' => Ok(Tok::LBracket),
            ']' => Ok(Tok::RBracket),
            ',' => Ok(Tok::Comma),
            '+' => Ok(Tok::Plus),
            '-' => Ok(Tok::Minus),
            '*' => Ok(Tok::Star),
            '/' => Ok(Tok::Slash),
            '%' => Ok(Tok::Percent),
            '|' => doubled(self, Tok::OrOr, "||"),
            '&' => doubled(self, Tok::AndAnd, "&&"),
            '=' => doubled(self, Tok::EqEq, "=="),
            '!' => Ok(if self.eat('=') { Tok::NotEq } else { Tok::Bang }),
            '<' => Ok(if self.eat('=') { Tok::Le } else { Tok::Lt }),
            '>' => Ok(if self.eat('=') { Tok::Ge } else { Tok::Gt }),
            _ => Err(Diag::new(
                start,
                format!("unexpected character `{}`", c.escape_debug()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<Tok> {
        lex(source).unwrap().into_iter().map(|t| t.tok).collect()
    }

    fn error(source: &str) -> Diag {
        lex(source).unwrap_err()
    }

    #[test]
    fn lexes_every_operator() {
        assert_eq!(
            kinds("|| && == != < <= > >= + - * / % ! ( ) [ ] , in"),
            vec![
                Tok::OrOr,
                Tok::AndAnd,
                Tok::EqEq,
                Tok::NotEq,
                Tok::Lt,
                Tok::Le,
                Tok::Gt,
                Tok::Ge,
                Tok::Plus,
                Tok::Minus,
                Tok::Star,
                Tok::Slash,
                Tok::Percent,
                Tok::Bang,
                Tok::LParen,
                Tok::RParen,
                Tok::LBracket,
                Tok::RBracket,
                Tok::Comma,
                Tok::In,
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn lexes_literals_and_names_with_spans() {
        let tokens = lex("card.count_1m>=2.5e1 && true != false").unwrap();
        assert_eq!(tokens[0].tok, Tok::Ident("card.count_1m".into()));
        assert_eq!((tokens[0].start, tokens[0].end), (0, 13));
        assert_eq!(tokens[1].tok, Tok::Ge);
        assert_eq!(tokens[2].tok, Tok::Number(25.0));
        assert_eq!((tokens[2].start, tokens[2].end), (15, 20));
        assert_eq!(tokens[4].tok, Tok::True);
        assert_eq!(tokens[6].tok, Tok::False);
        assert_eq!(
            kinds("1e3 7 0.5"),
            vec![
                Tok::Number(1000.0),
                Tok::Number(7.0),
                Tok::Number(0.5),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn decodes_string_escapes_in_both_quotes() {
        assert_eq!(
            kinds(r#""a\"b\\c\n\t" 'it\'s' "é""#),
            vec![
                Tok::Str("a\"b\\c\n\t".into()),
                Tok::Str("it's".into()),
                Tok::Str("é".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn rejects_a_bad_character() {
        let d = error("tx.amount # 3");
        assert_eq!(d, Diag::new(10, "unexpected character `#`"));
        assert_eq!(error("tx.amount > 3 ;").offset, 14);
        assert_eq!(error("a ≥ 3").message, "unexpected character `≥`");
    }

    #[test]
    fn hints_at_doubled_operators() {
        assert_eq!(
            error("tx.amount = 3"),
            Diag::new(10, "unexpected `=`, did you mean `==`?")
        );
        assert_eq!(error("a & b").message, "unexpected `&`, did you mean `&&`?");
        assert_eq!(error("a | b").message, "unexpected `|`, did you mean `||`?");
    }

    #[test]
    fn rejects_an_unterminated_string_at_its_quote() {
        assert_eq!(
            error("tx.kind == \"refund"),
            Diag::new(11, "unterminated string")
        );
        assert_eq!(error("tx.kind == 'x\\").offset, 11);
    }

    #[test]
    fn rejects_bad_numbers() {
        assert_eq!(
            error("x > 1."),
            Diag::new(4, "invalid number `1.`: expected a digit after `.`")
        );
        assert_eq!(
            error("x > 1e+"),
            Diag::new(4, "invalid number `1e+`: expected digits in the exponent")
        );
        assert_eq!(error("x > 12abc"), Diag::new(4, "invalid number `12abc`"));
        assert_eq!(error("x > 1.2.3"), Diag::new(4, "invalid number `1.2.3`"));
        assert_eq!(
            error("x > 1e999"),
            Diag::new(4, "number `1e999` is out of range")
        );
    }

    #[test]
    fn rejects_a_bad_escape_at_the_backslash() {
        let d = error(r#"tx.kind == "a\qb""#);
        assert_eq!(d.offset, 13);
        assert!(
            d.message.starts_with("invalid escape `\\q` in string"),
            "{}",
            d.message
        );
    }

    #[test]
    fn rejects_a_dangling_dot_in_a_name() {
        assert_eq!(
            error("card. > 3"),
            Diag::new(0, "invalid name `card.`: expected a name after `.`")
        );
    }

    #[test]
    fn describes_tokens_for_messages() {
        let source = "3 'x' abc ) ";
        let tokens = lex(source).unwrap();
        let described: Vec<String> = tokens.iter().map(|t| t.describe(source)).collect();
        assert_eq!(
            described,
            vec![
                "number `3`",
                "string 'x'",
                "name `abc`",
                "`)`",
                "end of condition"
            ]
        );
    }
}
