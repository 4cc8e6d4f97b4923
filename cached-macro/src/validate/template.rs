//! Key templates: `key = "{id}:{lang}"` read into literal text and placeholders, each
//! placeholder an argument, a field path of one, or a field of `self`. The character and gap
//! rules are the runtime's `template_error`, evaluated at compile time by the expansion.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::{Ident, LitStr};

use super::{
    Errors,
    key::{KeyPart, Keyed},
    params::{Param, arg_names, find},
};
use crate::args::Func;

/// The template's parts, in order, into `keyed`.
pub(super) fn parts(
    what: &str,
    lit: &LitStr,
    func: &Func,
    params: &[Param<'_>],
    keyed: &mut Keyed,
    errors: &mut Errors,
) {
    let template = lit.value();
    let span = lit.span();
    // The character and gap rules are the runtime's `template_error`, evaluated at compile
    // time by the expansion; here only the placeholders are read.
    let mut rest = template.as_str();
    let mut text = String::new();
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => {
                let Some(end) = rest.find('}') else {
                    errors.at(
                        span,
                        format!(
                            "unclosed `{{` in {what} {template:?}: close the placeholder with `}}`"
                        ),
                    );
                    return;
                };
                let placeholder = &rest[1..end];
                if placeholder.contains('{') {
                    errors.at(
                        span,
                        format!(
                            "unclosed `{{` in {what} {template:?}: close the placeholder with `}}`"
                        ),
                    );
                    return;
                }
                if !text.is_empty() {
                    keyed
                        .parts
                        .push(KeyPart::Literal(std::mem::take(&mut text)));
                }
                if let Some(part) =
                    placeholder_value(what, placeholder, span, func, params, keyed, errors)
                {
                    keyed.parts.push(part);
                }
                rest = &rest[end + 1..];
            }
            '}' => {
                errors.at(span, format!("unmatched `}}` in {what} {template:?}"));
                return;
            }
            c => {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        keyed.parts.push(KeyPart::Literal(text));
    }
}

/// The value a `{name}`, `{name.field.0}` or `{self.field}` placeholder stands for.
fn placeholder_value(
    what: &str,
    placeholder: &str,
    span: Span,
    func: &Func,
    params: &[Param<'_>],
    keyed: &mut Keyed,
    errors: &mut Errors,
) -> Option<KeyPart> {
    let mut segments = placeholder.split('.');
    let root = segments.next().unwrap_or_default();
    let root = root.strip_prefix("r#").unwrap_or(root);
    if root.is_empty() {
        errors.at(
            span,
            format!(
                "empty placeholder `{{{placeholder}}}` in {what}: name an argument, like `{{id}}`"
            ),
        );
        return None;
    }
    let mut fields = TokenStream::new();
    for segment in segments {
        match field(segment, span) {
            Some(member) => fields.extend(quote_spanned!(span=> . #member)),
            None => {
                errors.at(
                    span,
                    format!("`{{{placeholder}}}` in {what}: `{segment}` is not a field name"),
                );
                return None;
            }
        }
    }
    if root == "self" {
        let Some(receiver) = func.sig.receiver() else {
            errors.at(
                span,
                format!("`{{{placeholder}}}` in {what}: this function has no `self`"),
            );
            return None;
        };
        if fields.is_empty() {
            // Reported here; the receiver rule would only repeat it.
            keyed.self_in_key = true;
            errors.at(
                span,
                format!("`{{self}}` in {what}: name the fields of `self` that tell instances apart, like `{{self.tenant}}`"),
            );
            return None;
        }
        keyed.self_in_key = true;
        let self_token = receiver.self_token;
        return Some(KeyPart::Value {
            root: quote!(#self_token),
            fields,
            span,
        });
    }
    let Some(found) = find(params, root) else {
        errors.at(
            span,
            format!("{what} names no argument `{root}`; {}", arg_names(params)),
        );
        return None;
    };
    let name = &found.ident;
    let mut ident = name.clone();
    ident.set_span(name.span().located_at(span));
    if !keyed.roots.iter().any(|r| r == name) {
        keyed.roots.push(name.clone());
    }
    Some(KeyPart::Value {
        root: ident.into_token_stream(),
        fields,
        span,
    })
}

/// A field name or tuple index of a placeholder path.
fn field(segment: &str, span: Span) -> Option<TokenStream> {
    if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
        let index: u32 = segment.parse().ok()?;
        return Some(syn::Index { index, span }.into_token_stream());
    }
    let (raw, name) = match segment.strip_prefix("r#") {
        Some(name) => (true, name),
        None => (false, segment),
    };
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name != "_";
    if !valid || matches!(name, "self" | "Self" | "super" | "crate") {
        return None;
    }
    // A keyword field (`type`) can only be named raw (`r#type`).
    let ident = if raw || syn::parse_str::<Ident>(name).is_err() {
        Ident::new_raw(name, span)
    } else {
        Ident::new(name, span)
    };
    Some(ident.into_token_stream())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_fields_are_identifiers_or_indexes() {
        let span = Span::call_site();
        assert_eq!(field("page", span).expect("ident").to_string(), "page");
        assert_eq!(field("0", span).expect("index").to_string(), "0");
        assert_eq!(field("r#type", span).expect("raw").to_string(), "r#type");
        assert_eq!(field("type", span).expect("keyword").to_string(), "r#type");
        for bad in ["", "_", "1a", "a-b", "a b", "r#self", "self", "é"] {
            assert!(field(bad, span).is_none(), "{bad:?}");
        }
    }
}
