//! A validator for `daticert.xml` against the Italian daticert DTD (`fixtures/reference/daticert.dtd`;
//! RFC 6109 §4.4; digest §6.1), written from the DTD text: content models, `#PCDATA` elements,
//! `EMPTY`, attribute enumerations, `#REQUIRED` and defaults. It never fetches anything and refuses
//! entity declarations (digest §6.2, §14.7): only the five predefined entities and character
//! references are accepted.
//!
//! The tests cross-check it against `xmllint --nonet --noout --dtdvalid`.

use quick_xml::Reader;
use quick_xml::events::Event;

/// One element of the document, with its attributes (values normalised), child elements and the
/// character data directly inside it (entities resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// The element name.
    pub name: String,
    /// The attributes as written (after attribute-value normalisation), in order.
    pub attrs: Vec<(String, String)>,
    /// The child elements, in order.
    pub children: Vec<Element>,
    /// The character data directly inside the element (children's text excluded).
    pub text: String,
}

impl Element {
    /// The value of attribute `name`, if written.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child named `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Why a daticert could not be read as a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// A DOCTYPE internal subset declares entities, or the document references an entity that is
    /// not one of the five predefined ones: refused, never expanded (digest §14.7).
    #[error("refused entity: {0}")]
    Entity(String),
    /// Not well-formed XML (or not UTF-8).
    #[error("not well-formed: {0}")]
    Malformed(String),
}

/// Reads a document into a tree. Refuses entity declarations and undeclared entity references.
pub fn parse_tree(xml: &[u8]) -> Result<Element, XmlError> {
    // The daticert is UTF-8 (RFC 6109 §4.3.3; the DTD's own declaration).
    let text = std::str::from_utf8(xml)
        .map_err(|e| XmlError::Malformed(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let pos = reader.buffer_position();
        let ev = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(format!("{e} (near byte {pos})")))?;
        match ev {
            Event::DocType(d) => {
                let body = d.xml10_content();
                // An internal subset (`[...]`) may declare entities: billion laughs, XXE.
                if body.contains("<!ENTITY") || body.contains("<!entity") {
                    return Err(XmlError::Entity(format!(
                        "the DOCTYPE declares entities: {}",
                        shorten(&body)
                    )));
                }
            }
            Event::Start(s) | Event::Empty(s) if root.is_some() => {
                return Err(XmlError::Malformed(format!(
                    "second root element <{}>",
                    s.name().as_ref()
                )));
            }
            Event::Start(s) => {
                stack.push(element_of(&s)?);
            }
            Event::Empty(s) => {
                let el = element_of(&s)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => {
                        return Err(XmlError::Malformed("text outside the root element".into()));
                    }
                }
            }
            Event::CData(c) => {
                let content = c.xml10_content().into_owned();
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&content),
                    None => {
                        return Err(XmlError::Malformed("CDATA outside the root element".into()));
                    }
                }
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| XmlError::Malformed(format!("character reference: {e}")))?
                        .map(String::from)
                } else {
                    predefined(&r.xml10_content()).map(String::from)
                };
                let Some(resolved) = resolved else {
                    return Err(XmlError::Entity(format!(
                        "reference to undeclared entity &{};",
                        r.xml10_content()
                    )));
                };
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&resolved),
                    None => {
                        return Err(XmlError::Malformed(
                            "reference outside the root element".into(),
                        ));
                    }
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed(format!(
            "unclosed element <{}>",
            stack[stack.len() - 1].name
        )));
    }
    root.ok_or_else(|| XmlError::Malformed("no root element".into()))
}

fn shorten(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The five predefined entities of XML 1.0 §4.6.
fn predefined(name: &str) -> Option<&'static str> {
    match name {
        "lt" => Some("<"),
        "gt" => Some(">"),
        "amp" => Some("&"),
        "apos" => Some("'"),
        "quot" => Some("\""),
        _ => None,
    }
}

fn element_of(s: &quick_xml::events::BytesStart<'_>) -> Result<Element, XmlError> {
    let name = s.name().as_ref().to_string();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| XmlError::Malformed(format!("attribute of <{name}>: {e}")))?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| match e {
                quick_xml::Error::Escape(_) => {
                    XmlError::Entity(format!("attribute of <{name}>: {e}"))
                }
                other => XmlError::Malformed(format!("attribute of <{name}>: {other}")),
            })?;
        attrs.push((a.key.as_ref().to_string(), value.into_owned()));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// How often a child may occur in a sequence content model.
#[derive(Clone, Copy)]
enum Occ {
    One,
    Opt,
    Plus,
    Star,
}

/// A content model of the daticert DTD.
enum Model {
    /// `(a, b?, c+, d*)`: element content, a sequence.
    Seq(&'static [(&'static str, Occ)]),
    /// `(#PCDATA)`.
    Pcdata,
    /// `EMPTY`.
    Empty,
}

/// An attribute declaration.
enum AttType {
    Enum(&'static [&'static str]),
    Cdata,
}

enum AttDefault {
    Required,
    // The DTD's default value, transcribed for the reader; validation only needs to know it exists.
    #[allow(dead_code)]
    Default(&'static str),
}

/// `<!ELEMENT …>` of the daticert DTD, transcribed.
fn model(name: &str) -> Option<Model> {
    use Occ::*;
    Some(match name {
        // <!ELEMENT postacert (intestazione, dati)>
        "postacert" => Model::Seq(&[("intestazione", One), ("dati", One)]),
        // <!ELEMENT intestazione (mittente, destinatari+, risposte, oggetto?)>
        "intestazione" => Model::Seq(&[
            ("mittente", One),
            ("destinatari", Plus),
            ("risposte", One),
            ("oggetto", Opt),
        ]),
        // <!ELEMENT dati (gestore-emittente, data, identificativo, msgid?, ricevuta?, consegna?,
        //                 ricezione*, errore-esteso?)>
        "dati" => Model::Seq(&[
            ("gestore-emittente", One),
            ("data", One),
            ("identificativo", One),
            ("msgid", Opt),
            ("ricevuta", Opt),
            ("consegna", Opt),
            ("ricezione", Star),
            ("errore-esteso", Opt),
        ]),
        // <!ELEMENT data (giorno, ora)>
        "data" => Model::Seq(&[("giorno", One), ("ora", One)]),
        // <!ELEMENT ricevuta EMPTY>
        "ricevuta" => Model::Empty,
        "mittente" | "destinatari" | "risposte" | "oggetto" | "gestore-emittente" | "giorno"
        | "ora" | "identificativo" | "msgid" | "consegna" | "ricezione" | "errore-esteso" => {
            Model::Pcdata
        }
        _ => return None,
    })
}

/// `<!ATTLIST …>` of the daticert DTD, transcribed.
fn attlist(name: &str) -> &'static [(&'static str, AttType, AttDefault)] {
    match name {
        "postacert" => &[
            (
                "tipo",
                AttType::Enum(&[
                    "accettazione",
                    "non-accettazione",
                    "presa-in-carico",
                    "avvenuta-consegna",
                    "posta-certificata",
                    "errore-consegna",
                    "preavviso-errore-consegna",
                    "rilevazione-virus",
                ]),
                AttDefault::Required,
            ),
            (
                "errore",
                AttType::Enum(&["nessuno", "no-dest", "no-dominio", "virus", "altro"]),
                AttDefault::Default("nessuno"),
            ),
        ],
        "destinatari" => &[(
            "tipo",
            AttType::Enum(&["certificato", "esterno"]),
            AttDefault::Default("certificato"),
        )],
        "data" => &[("zona", AttType::Cdata, AttDefault::Required)],
        "ricevuta" => &[(
            "tipo",
            AttType::Enum(&["completa", "breve", "sintetica"]),
            AttDefault::Required,
        )],
        _ => &[],
    }
}

/// Validates a tree against the daticert DTD; returns every violation found (empty = valid).
pub fn validate(root: &Element) -> Vec<String> {
    let mut errors = Vec::new();
    if root.name != "postacert" {
        // "Usare l'elemento "postacert" come radice" (the DTD's first comment).
        errors.push(format!("root element is <{}>, not <postacert>", root.name));
    }
    validate_element(root, &mut errors);
    errors
}

fn validate_element(el: &Element, errors: &mut Vec<String>) {
    let Some(m) = model(&el.name) else {
        errors.push(format!("element <{}> is not declared", el.name));
        return;
    };
    // Attributes: declared, enumerated values, #REQUIRED.
    let decls = attlist(&el.name);
    for (n, v) in &el.attrs {
        match decls.iter().find(|(dn, _, _)| dn == n) {
            None => errors.push(format!("<{}>: attribute `{n}` is not declared", el.name)),
            Some((_, AttType::Enum(values), _)) => {
                // Enumerated attribute values are tokens: normalised by trimming (XML 1.0 §3.3.3).
                if !values.contains(&v.trim()) {
                    errors.push(format!(
                        "<{}>: `{n}` value \"{v}\" is not one of {}",
                        el.name,
                        values.join(" | ")
                    ));
                }
            }
            Some((_, AttType::Cdata, _)) => {}
        }
    }
    for (dn, _, default) in decls {
        if matches!(default, AttDefault::Required) && el.attr(dn).is_none() {
            errors.push(format!(
                "<{}>: required attribute `{dn}` is missing",
                el.name
            ));
        }
    }
    match m {
        Model::Pcdata => {
            for c in &el.children {
                errors.push(format!(
                    "<{}> holds only text, found element <{}>",
                    el.name, c.name
                ));
            }
        }
        Model::Empty => {
            if !el.children.is_empty() || !el.text.is_empty() {
                errors.push(format!("<{}> is declared EMPTY but has content", el.name));
            }
        }
        Model::Seq(seq) => {
            if !el.text.trim().is_empty() {
                errors.push(format!(
                    "<{}> has element content only, found text \"{}\"",
                    el.name,
                    shorten(&el.text)
                ));
            }
            let names: Vec<&str> = el.children.iter().map(|c| c.name.as_str()).collect();
            if let Err(e) = match_seq(seq, &names) {
                errors.push(format!(
                    "<{}> content ({}) does not match the model: {e}",
                    el.name,
                    names.join(", ")
                ));
            }
        }
    }
    for c in &el.children {
        validate_element(c, errors);
    }
}

/// Greedy matching is exact here: DTD content models are deterministic (XML 1.0 App. E).
fn match_seq(seq: &[(&str, Occ)], names: &[&str]) -> Result<(), String> {
    let mut i = 0;
    for (want, occ) in seq {
        let mut n = 0;
        while i < names.len() && names[i] == *want {
            i += 1;
            n += 1;
            if matches!(occ, Occ::One | Occ::Opt) {
                break;
            }
        }
        if n == 0 && matches!(occ, Occ::One | Occ::Plus) {
            return Err(match names.get(i) {
                Some(found) => format!("expected <{want}>, found <{found}>"),
                None => format!("missing <{want}>"),
            });
        }
    }
    match names.get(i) {
        Some(extra) => Err(format!("unexpected <{extra}>")),
        None => Ok(()),
    }
}

/// Parses and validates; `Err` when the document cannot be read, else the list of violations.
pub fn validate_bytes(xml: &[u8]) -> Result<Vec<String>, XmlError> {
    parse_tree(xml).map(|root| validate(&root))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="accettazione" errore="nessuno">
    <intestazione>
        <mittente>a@pec.example.it</mittente>
        <destinatari tipo="certificato">b@pec.example.it</destinatari>
        <risposte>a@pec.example.it</risposte>
    </intestazione>
    <dati>
        <gestore-emittente>EXAMPLE</gestore-emittente>
        <data zona="+0100"><giorno>14/11/2025</giorno><ora>18:26:32</ora></data>
        <identificativo>opec1@pec.example.it</identificativo>
        <msgid>&lt;c@h&gt;</msgid>
    </dati>
</postacert>
"#;

    #[test]
    fn a_minimal_daticert_is_valid_and_entities_resolve() {
        let root = parse_tree(VALID.as_bytes()).unwrap();
        assert_eq!(validate(&root), Vec::<String>::new());
        assert_eq!(
            root.child("dati").unwrap().child_text("msgid"),
            Some("<c@h>")
        );
    }

    #[test]
    fn violations_are_named() {
        let bad = VALID
            .replace("accettazione", "bogus")
            .replace("<risposte>a@pec.example.it</risposte>", "");
        let errs = validate_bytes(bad.as_bytes()).unwrap();
        assert!(errs.iter().any(|e| e.contains("\"bogus\"")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("<risposte>")), "{errs:?}");
        let order = VALID.replace(
            "<data zona=\"+0100\"><giorno>14/11/2025</giorno><ora>18:26:32</ora></data>",
            "<data><ora>18:26:32</ora><giorno>14/11/2025</giorno></data>",
        );
        let errs = validate_bytes(order.as_bytes()).unwrap();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn entity_declarations_are_refused() {
        let lol = VALID.replace(
            "<postacert ",
            "<!DOCTYPE postacert [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;\">]>\n<postacert ",
        );
        assert!(matches!(
            parse_tree(lol.as_bytes()),
            Err(XmlError::Entity(_))
        ));
        let undeclared = VALID.replace("EXAMPLE", "&xxe;");
        assert!(matches!(
            parse_tree(undeclared.as_bytes()),
            Err(XmlError::Entity(_))
        ));
    }
}
