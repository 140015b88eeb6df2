//! Parser: tokens to a syntax tree, by precedence climbing.
//!
//! Hostile input must not overflow the stack, so nesting is limited while parsing: every
//! parenthesis, unary operator, call and list counts one level before the parser recurses
//! into it, and every node records the depth of its tree, which bounds the recursion of the
//! later stages (`&&` and `||` chains are flat lists, so long chains cost no depth).

use super::lexer::{lex, Tok, Token};
use super::{Diag, MAX_DEPTH, MAX_NODES};

/// A node of the syntax tree with the byte span it covers.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Expr {
    pub(super) kind: ExprKind,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Height of the tree below this node (0 for a leaf).
    depth: usize,
}

/// The kinds of syntax nodes.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum ExprKind {
    Number(f64),
    Str(String),
    Bool(bool),
    List(Vec<Expr>),
    /// A feature name.
    Name(String),
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinOp,
        /// Offset of the operator, where type errors about the pair point.
        op_at: usize,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `a && b && c` or `a || b || c`, flattened.
    Logical {
        op: LogicOp,
        operands: Vec<Expr>,
    },
    Call {
        name: String,
        args: Vec<Expr>,
    },
}

/// Prefix operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnaryOp {
    Not,
    Neg,
}

/// Infix operators other than `&&` and `||`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    /// The operator as written.
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

/// `&&` or `||`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LogicOp {
    And,
    Or,
}

impl LogicOp {
    /// The operator as written.
    pub(super) fn symbol(self) -> &'static str {
        match self {
            LogicOp::And => "&&",
            LogicOp::Or => "||",
        }
    }
}

/// Parses a whole condition.
pub(super) fn parse(source: &str) -> Result<Expr, Diag> {
    let tokens = lex(source)?;
    if let [only] = tokens.as_slice() {
        if only.tok == Tok::Eof {
            return Err(Diag::new(0, "empty condition"));
        }
    }
    let mut parser = Parser {
        source,
        tokens: &tokens,
        pos: 0,
        nesting: 0,
        nodes: 0,
    };
    let expr = parser.or()?;
    let next = parser.peek();
    if next.tok != Tok::Eof {
        // `not a` parses `not` as a name and stops at `a`: the hint is about the word before.
        let previous = parser.pos.checked_sub(1).and_then(|i| tokens.get(i));
        let hint = match previous.map(|t| &t.tok) {
            Some(word @ Tok::Ident(name)) if name == "not" => word_operator_hint(word),
            _ => word_operator_hint(&next.tok),
        };
        return Err(Diag::new(
            next.start,
            format!(
                "unexpected {}: expected an operator or the end of the condition{hint}",
                next.describe(source),
            ),
        ));
    }
    Ok(expr)
}

/// A hint for analysts who write `and`, `or` or `not` as words.
fn word_operator_hint(tok: &Tok) -> &'static str {
    match tok {
        Tok::Ident(word) => match word.as_str() {
            "and" => " (write `and` as `&&`)",
            "or" => " (write `or` as `||`)",
            "not" => " (write `not` as `!`)",
            _ => "",
        },
        _ => "",
    }
}

/// A parsing step for the operands of an operator level.
type Operand<'t> = fn(&mut Parser<'t>) -> Result<Expr, Diag>;

struct Parser<'t> {
    source: &'t str,
    tokens: &'t [Token],
    pos: usize,
    /// Open parentheses, unary operators, calls and lists around the current position.
    nesting: usize,
    /// Nodes built so far (bounds the work of the later stages per rule).
    nodes: usize,
}

/// The end-of-input token every token list ends with; a fallback so `peek` never fails.
const EOF: Token = Token {
    tok: Tok::Eof,
    start: 0,
    end: 0,
};

impl<'t> Parser<'t> {
    fn peek(&self) -> &'t Token {
        self.tokens
            .get(self.pos)
            .or_else(|| self.tokens.last())
            .unwrap_or(&EOF)
    }

    /// Consumes a token, counting the nodes: every node of the tree starts at a token of its
    /// own (a value, a name, an operator, a call's name, a list's `[`); punctuation and the
    /// `&&` / `||` of a flat chain start none.
    fn bump(&mut self) -> Result<&'t Token, Diag> {
        let token = self.peek();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        if !matches!(
            token.tok,
            Tok::LParen
                | Tok::RParen
                | Tok::RBracket
                | Tok::Comma
                | Tok::AndAnd
                | Tok::OrOr
                | Tok::Eof
        ) {
            self.nodes += 1;
            if self.nodes > MAX_NODES {
                return Err(Diag::new(
                    token.start,
                    format!(
                        "condition is too complex: more than {MAX_NODES} values, names and \
                         operators (split it into several rules)"
                    ),
                ));
            }
        }
        Ok(token)
    }

    fn too_deep(at: usize) -> Diag {
        Diag::new(
            at,
            format!("condition is nested too deeply (at most {MAX_DEPTH} levels)"),
        )
    }

    /// Enters one nesting level (parenthesis, unary operator, call, list) at `at`.
    fn enter(&mut self, at: usize) -> Result<(), Diag> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(Self::too_deep(at));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Builds an inner node, refusing trees deeper than the limit.
    fn node(kind: ExprKind, start: usize, end: usize, at: usize) -> Result<Expr, Diag> {
        let depth = height(&kind);
        if depth > MAX_DEPTH {
            return Err(Self::too_deep(at));
        }
        Ok(Expr {
            kind,
            start,
            end,
            depth,
        })
    }

    fn leaf(kind: ExprKind, token: &Token) -> Expr {
        Expr {
            kind,
            start: token.start,
            end: token.end,
            depth: 0,
        }
    }

    fn expect_closing(&mut self, closing: Tok, what: &str) -> Result<usize, Diag> {
        let token = self.peek();
        if token.tok == closing {
            self.bump()?;
            Ok(token.end)
        } else {
            Err(Diag::new(
                token.start,
                format!("expected {what}, found {}", token.describe(self.source)),
            ))
        }
    }

    fn or(&mut self) -> Result<Expr, Diag> {
        self.logical(LogicOp::Or)
    }

    /// `a || b || ...` over `&&` chains, or `a && b && ...` over equalities.
    fn logical(&mut self, op: LogicOp) -> Result<Expr, Diag> {
        let (tok, operand): (Tok, Operand<'t>) = match op {
            LogicOp::Or => (Tok::OrOr, |p| p.logical(LogicOp::And)),
            LogicOp::And => (Tok::AndAnd, Self::equality),
        };
        let first = operand(self)?;
        if self.peek().tok != tok {
            return Ok(first);
        }
        let start = first.start;
        let mut operands = vec![first];
        let mut at = start;
        while self.peek().tok == tok {
            at = self.bump()?.start;
            operands.push(operand(self)?);
        }
        let end = operands.last().map_or(start, |e| e.end);
        Self::node(ExprKind::Logical { op, operands }, start, end, at)
    }

    fn equality(&mut self) -> Result<Expr, Diag> {
        self.comparison(
            |t| match t {
                Tok::EqEq => Some(BinOp::Eq),
                Tok::NotEq => Some(BinOp::Ne),
                _ => None,
            },
            Self::relational,
        )
    }

    fn relational(&mut self) -> Result<Expr, Diag> {
        self.comparison(
            |t| match t {
                Tok::Lt => Some(BinOp::Lt),
                Tok::Le => Some(BinOp::Le),
                Tok::Gt => Some(BinOp::Gt),
                Tok::Ge => Some(BinOp::Ge),
                Tok::In => Some(BinOp::In),
                _ => None,
            },
            Self::additive,
        )
    }

    /// One non-associative comparison: `a op b`, where a second `op` is an error.
    fn comparison(
        &mut self,
        op_of: fn(&Tok) -> Option<BinOp>,
        operand: Operand<'t>,
    ) -> Result<Expr, Diag> {
        let lhs = operand(self)?;
        let Some(op) = op_of(&self.peek().tok) else {
            return Ok(lhs);
        };
        let op_at = self.bump()?.start;
        let rhs = operand(self)?;
        let next = self.peek();
        if let Some(second) = op_of(&next.tok) {
            return Err(Diag::new(
                next.start,
                format!(
                    "comparisons cannot be chained: `{}` after `{}` (join comparisons with `&&`)",
                    second.symbol(),
                    op.symbol()
                ),
            ));
        }
        let (start, end) = (lhs.start, rhs.end);
        let kind = ExprKind::Binary {
            op,
            op_at,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        };
        Self::node(kind, start, end, op_at)
    }

    fn additive(&mut self) -> Result<Expr, Diag> {
        self.arithmetic(
            |t| match t {
                Tok::Plus => Some(BinOp::Add),
                Tok::Minus => Some(BinOp::Sub),
                _ => None,
            },
            Self::multiplicative,
        )
    }

    fn multiplicative(&mut self) -> Result<Expr, Diag> {
        self.arithmetic(
            |t| match t {
                Tok::Star => Some(BinOp::Mul),
                Tok::Slash => Some(BinOp::Div),
                Tok::Percent => Some(BinOp::Rem),
                _ => None,
            },
            Self::unary,
        )
    }

    /// A left-associative chain `a op b op c`.
    fn arithmetic(
        &mut self,
        op_of: fn(&Tok) -> Option<BinOp>,
        operand: Operand<'t>,
    ) -> Result<Expr, Diag> {
        let mut lhs = operand(self)?;
        while let Some(op) = op_of(&self.peek().tok) {
            let op_at = self.bump()?.start;
            let rhs = operand(self)?;
            let (start, end) = (lhs.start, rhs.end);
            let kind = ExprKind::Binary {
                op,
                op_at,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
            lhs = Self::node(kind, start, end, op_at)?;
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, Diag> {
        let token = self.peek();
        let op = match token.tok {
            Tok::Bang => UnaryOp::Not,
            Tok::Minus => UnaryOp::Neg,
            _ => return self.primary(),
        };
        self.bump()?;
        self.enter(token.start)?;
        let operand = self.unary()?;
        self.leave();
        let end = operand.end;
        let kind = ExprKind::Unary {
            op,
            operand: Box::new(operand),
        };
        Self::node(kind, token.start, end, token.start)
    }

    fn primary(&mut self) -> Result<Expr, Diag> {
        let token = self.bump()?;
        match &token.tok {
            Tok::Number(v) => Ok(Self::leaf(ExprKind::Number(*v), token)),
            Tok::Str(s) => Ok(Self::leaf(ExprKind::Str(s.clone()), token)),
            Tok::True => Ok(Self::leaf(ExprKind::Bool(true), token)),
            Tok::False => Ok(Self::leaf(ExprKind::Bool(false), token)),
            Tok::LParen => {
                self.enter(token.start)?;
                let mut inner = self.or()?;
                let end = self.expect_closing(Tok::RParen, "`)` to close `(`")?;
                self.leave();
                // The parentheses belong to the node, so errors about it point at `(`.
                inner.start = token.start;
                inner.end = end;
                Ok(inner)
            }
            Tok::LBracket => {
                self.enter(token.start)?;
                let (items, end) = self.sequence(Tok::RBracket, "`,` or `]`")?;
                self.leave();
                Self::node(ExprKind::List(items), token.start, end, token.start)
            }
            Tok::Ident(name) if self.peek().tok == Tok::LParen => {
                self.bump()?;
                self.enter(token.start)?;
                let (args, end) = self.sequence(Tok::RParen, "`,` or `)`")?;
                self.leave();
                let kind = ExprKind::Call {
                    name: name.clone(),
                    args,
                };
                Self::node(kind, token.start, end, token.start)
            }
            Tok::Ident(name) => Ok(Self::leaf(ExprKind::Name(name.clone()), token)),
            _ => Err(Diag::new(
                token.start,
                format!(
                    "unexpected {}: expected a value{}",
                    token.describe(self.source),
                    word_operator_hint(&token.tok)
                ),
            )),
        }
    }

    /// Comma-separated expressions up to `closing` (a trailing comma is allowed), and the
    /// offset just past `closing`.
    fn sequence(&mut self, closing: Tok, expected: &str) -> Result<(Vec<Expr>, usize), Diag> {
        let mut items = Vec::new();
        loop {
            if self.peek().tok == closing {
                return Ok((items, self.bump()?.end));
            }
            items.push(self.or()?);
            if self.peek().tok == Tok::Comma {
                self.bump()?;
            } else {
                let end = self.expect_closing(closing, expected)?;
                return Ok((items, end));
            }
        }
    }
}

/// Height of a node over its children (a leaf has height 0).
fn height(kind: &ExprKind) -> usize {
    let below = match kind {
        ExprKind::Unary { operand, .. } => operand.depth,
        ExprKind::Binary { lhs, rhs, .. } => lhs.depth.max(rhs.depth),
        ExprKind::Logical {
            operands: items, ..
        }
        | ExprKind::Call { args: items, .. }
        | ExprKind::List(items) => items.iter().map(|e| e.depth).max().unwrap_or(0),
        ExprKind::Number(_) | ExprKind::Str(_) | ExprKind::Bool(_) | ExprKind::Name(_) => return 0,
    };
    below + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree as an s-expression, to check its shape.
    fn sexpr(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Number(v) => format!("{v}"),
            ExprKind::Str(s) => format!("{s:?}"),
            ExprKind::Bool(b) => format!("{b}"),
            ExprKind::Name(n) => n.clone(),
            ExprKind::List(items) => {
                let items: Vec<String> = items.iter().map(sexpr).collect();
                format!("[{}]", items.join(" "))
            }
            ExprKind::Unary { op, operand } => {
                let op = if *op == UnaryOp::Not { "!" } else { "neg" };
                format!("({op} {})", sexpr(operand))
            }
            ExprKind::Binary { op, lhs, rhs, .. } => {
                format!("({} {} {})", op.symbol(), sexpr(lhs), sexpr(rhs))
            }
            ExprKind::Logical { op, operands } => {
                let items: Vec<String> = operands.iter().map(sexpr).collect();
                format!("({} {})", op.symbol(), items.join(" "))
            }
            ExprKind::Call { name, args } => {
                let items: Vec<String> = args.iter().map(sexpr).collect();
                format!("({name} {})", items.join(" "))
            }
        }
    }

    fn shape(source: &str) -> String {
        sexpr(&parse(source).unwrap())
    }

    fn error(source: &str) -> Diag {
        parse(source).unwrap_err()
    }

    #[test]
    fn binds_by_precedence() {
        assert_eq!(shape("a || b && c"), "(|| a (&& b c))");
        assert_eq!(shape("a && b || c"), "(|| (&& a b) c)");
        assert_eq!(shape("a == b && c != d"), "(&& (== a b) (!= c d))");
        assert_eq!(shape("a < b == c"), "(== (< a b) c)");
        assert_eq!(shape("1 + 2 * 3 > 4"), "(> (+ 1 (* 2 3)) 4)");
        assert_eq!(shape("(1 + 2) * 3"), "(* (+ 1 2) 3)");
        assert_eq!(shape("!a && -b < c"), "(&& (! a) (< (neg b) c))");
        assert_eq!(shape("x in [1, 2,]"), "(in x [1 2])");
        assert_eq!(shape("min(a, b % 2)"), "(min a (% b 2))");
        assert_eq!(shape("f()"), "(f )");
    }

    #[test]
    fn arithmetic_is_left_associative() {
        assert_eq!(shape("a - b - c"), "(- (- a b) c)");
        assert_eq!(shape("a / b * c % d"), "(% (* (/ a b) c) d)");
    }

    #[test]
    fn logical_chains_are_flat() {
        assert_eq!(shape("a || b || c || d"), "(|| a b c d)");
        let long = vec!["a"; 500].join(" && ");
        assert!(parse(&long).is_ok());
    }

    #[test]
    fn spans_cover_the_source_including_parentheses() {
        let e = parse("  (a + b) * 2").unwrap();
        assert_eq!((e.start, e.end), (2, 13));
        let ExprKind::Binary { lhs, op_at, .. } = &e.kind else {
            panic!("not binary: {e:?}");
        };
        assert_eq!((lhs.start, lhs.end, *op_at), (2, 9, 10));
    }

    #[test]
    fn rejects_an_unexpected_token() {
        assert_eq!(
            error("card.count_1m > > 3"),
            Diag::new(16, "unexpected `>`: expected a value")
        );
        assert_eq!(
            error("tx.amount >"),
            Diag::new(11, "unexpected end of condition: expected a value")
        );
    }

    #[test]
    fn rejects_a_missing_closing_parenthesis() {
        assert_eq!(
            error("(card.count_1m > 3"),
            Diag::new(18, "expected `)` to close `(`, found end of condition")
        );
        assert_eq!(
            error("min(a, b"),
            Diag::new(8, "expected `,` or `)`, found end of condition")
        );
        assert_eq!(
            error("x in [1, 2"),
            Diag::new(10, "expected `,` or `]`, found end of condition")
        );
    }

    #[test]
    fn rejects_trailing_input() {
        assert_eq!(
            error("card.count_1m > 3 4"),
            Diag::new(
                18,
                "unexpected number `4`: expected an operator or the end of the condition"
            )
        );
        assert_eq!(error("a > 1)").offset, 5);
    }

    #[test]
    fn hints_at_word_operators() {
        assert_eq!(
            error("a > 1 and b").message,
            "unexpected name `and`: expected an operator or the end of the condition \
             (write `and` as `&&`)"
        );
        assert!(error("not a").message.ends_with("(write `not` as `!`)"));
    }

    #[test]
    fn rejects_chained_comparisons() {
        assert_eq!(
            error("1 < tx.amount < 5"),
            Diag::new(
                14,
                "comparisons cannot be chained: `<` after `<` (join comparisons with `&&`)"
            )
        );
        assert_eq!(error("a == b != c").offset, 7);
        assert_eq!(error("a in [1] in [2]").offset, 9);
    }

    #[test]
    fn rejects_an_empty_condition() {
        assert_eq!(error(""), Diag::new(0, "empty condition"));
        assert_eq!(error("  \n\t "), Diag::new(0, "empty condition"));
        assert_eq!(error("()").message, "unexpected `)`: expected a value");
    }

    #[test]
    fn limits_parenthesis_nesting() {
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            error(&deep),
            Diag::new(64, "condition is nested too deeply (at most 64 levels)")
        );
    }

    #[test]
    fn limits_the_number_of_nodes() {
        // A flat `&&` chain costs no depth; its size is bounded by the node count.
        let at_limit = vec!["a"; MAX_NODES].join(" && ");
        assert!(parse(&at_limit).is_ok());
        let over = vec!["a"; MAX_NODES + 1].join(" || ");
        let d = error(&over);
        assert!(d.message.contains("too complex"), "{}", d.message);
        // It points at the first token past the limit: the last `a`.
        assert_eq!(d.offset, over.len() - 1);
        let list = format!("x in [{}]", vec!["1"; MAX_NODES].join(", "));
        assert!(error(&list).message.contains("too complex"));
    }

    #[test]
    fn limits_every_kind_of_nesting_without_overflowing() {
        // Far past the limit: must fail cleanly, not overflow the stack.
        for deep in [
            "(".repeat(100_000),
            "!".repeat(100_000) + "a",
            "-".repeat(100_000) + "1",
            "[".repeat(100_000),
            "f(".repeat(100_000),
            vec!["1"; 100].join(" + "),
            vec!["1"; 100].join(" * "),
        ] {
            let d = error(&deep);
            assert!(d.message.contains("nested too deeply"), "{}", d.message);
        }
        assert!(parse(&vec!["1"; MAX_DEPTH + 1].join(" + ")).is_ok());
    }
}
