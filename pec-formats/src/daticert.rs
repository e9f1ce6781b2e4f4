//! `daticert.xml`, the certification data (RFC 6109 §4.4; the Italian DTD in
//! `fixtures/reference/daticert.dtd`). Writing and reading of every element and attribute.
//!
//! The reader is a small event loop over quick-xml that builds a tree of the document, then maps it
//! to the types. It never loads the external DTD, never expands an entity other than the five
//! predefined ones and character references, and refuses any internal DTD subset that declares an
//! entity (billion laughs, XXE: digest §6.2, §14.7).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::kind::{Errore, Tipo, TipoDestinatario, TipoRicevuta};
use crate::time;

/// The whole document: `<!ELEMENT postacert (intestazione, dati)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daticert {
    /// `postacert/@tipo` (#REQUIRED).
    pub tipo: Tipo,
    /// `postacert/@errore` (default `nessuno`).
    pub errore: Errore,
    /// The original message's header data.
    pub intestazione: Intestazione,
    /// The certification data proper.
    pub dati: Dati,
}

/// `<!ELEMENT intestazione (mittente, destinatari+, risposte, oggetto?)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intestazione {
    /// `mittente`: the original sender (the SMTP reverse-path; RFC 6109 §2.1).
    pub mittente: String,
    /// `destinatari` (1..n): every To and Cc recipient, each `certificato` or `esterno`.
    pub destinatari: Vec<Destinatario>,
    /// `risposte`: the original Reply-To, else the sender (required by the DTD).
    pub risposte: String,
    /// `oggetto` (optional): the original subject.
    pub oggetto: Option<String>,
}

/// One `<destinatari tipo="…">address</destinatari>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinatario {
    /// `destinatari/@tipo` (default `certificato`).
    pub tipo: TipoDestinatario,
    /// The address, as written.
    pub indirizzo: String,
}

/// `<!ELEMENT dati (gestore-emittente, data, identificativo, msgid?, ricevuta?, consegna?,
/// ricezione*, errore-esteso?)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dati {
    /// `gestore-emittente`: the certifying provider's descriptive name.
    pub gestore_emittente: String,
    /// `data`: the event time in Italian legal local time.
    pub data: Data,
    /// `identificativo`: the PEC msgid of the transport envelope (opaque).
    pub identificativo: String,
    /// `msgid` (optional): the client's original Message-ID, with its angle brackets
    /// (`<abc@host>`; escaped as `&lt;abc@host&gt;` in the XML).
    pub msgid: Option<String>,
    /// `ricevuta/@tipo` (optional): on transport envelopes and delivery receipts.
    pub ricevuta: Option<TipoRicevuta>,
    /// `consegna` (optional): the one recipient delivery was made or tried to.
    pub consegna: Option<String>,
    /// `ricezione` (0..n): on presa in carico, the recipients the notice covers.
    pub ricezione: Vec<String>,
    /// `errore-esteso` (optional): a short error description.
    pub errore_esteso: Option<String>,
}

/// `<data zona="+hhmm"><giorno>gg/mm/aaaa</giorno><ora>hh:mm:ss</ora></data>`, kept as written so
/// that reading and writing real files is lossless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// `data/@zona`: `[+|-]hhmm`, the offset of local legal time from UTC.
    pub zona: String,
    /// `giorno`: `gg/mm/aaaa`.
    pub giorno: String,
    /// `ora`: `hh:mm:ss`.
    pub ora: String,
}

/// Why a daticert.xml could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DaticertError {
    /// Not well-formed XML, or not a `postacert` document; the message names what and where.
    #[error("daticert.xml: {0}")]
    Invalid(String),
    /// A DOCTYPE with an internal subset declaring entities (billion laughs, external entities):
    /// refused, never expanded and never fetched.
    #[error("daticert.xml: refused entity declaration: {0}")]
    Entity(String),
}

/// The DOCTYPE written by [`Daticert::to_xml`]: the DTD by its file name, never fetched by readers.
pub const DOCTYPE: &str = r#"<!DOCTYPE postacert SYSTEM "daticert.dtd">"#;

/// Deeper nesting is refused: the DTD has four levels (postacert/dati/data/giorno).
const MAX_DEPTH: usize = 32;
/// More elements are refused: a real daticert has a few dozen.
const MAX_ELEMENTS: usize = 100_000;

impl Daticert {
    /// Writes the document: XML declaration, `<!DOCTYPE postacert SYSTEM "daticert.dtd">`, 4-space
    /// indentation, LF line ends (as real providers do), valid against the DTD.
    pub fn to_xml(&self) -> String {
        let i = &self.intestazione;
        let d = &self.dati;
        let mut w = String::with_capacity(1024);
        w.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        w.push_str(DOCTYPE);
        w.push('\n');
        // DTD: postacert/@tipo #REQUIRED; @errore defaults to nessuno but real files always write it.
        w.push_str(&format!(
            "<postacert tipo=\"{}\" errore=\"{}\">\n",
            self.tipo, self.errore
        ));
        // DTD: intestazione (mittente, destinatari+, risposte, oggetto?)
        w.push_str("    <intestazione>\n");
        leaf(&mut w, "mittente", &i.mittente);
        for dest in &i.destinatari {
            w.push_str(&format!(
                "        <destinatari tipo=\"{}\">{}</destinatari>\n",
                dest.tipo,
                escape(&dest.indirizzo, false)
            ));
        }
        leaf(&mut w, "risposte", &i.risposte);
        if let Some(o) = &i.oggetto {
            leaf(&mut w, "oggetto", o);
        }
        w.push_str("    </intestazione>\n");
        // DTD: dati (gestore-emittente, data, identificativo, msgid?, ricevuta?, consegna?,
        // ricezione*, errore-esteso?)
        w.push_str("    <dati>\n");
        leaf(&mut w, "gestore-emittente", &d.gestore_emittente);
        w.push_str(&format!(
            "        <data zona=\"{}\">\n",
            escape(&d.data.zona, true)
        ));
        w.push_str(&format!(
            "            <giorno>{}</giorno>\n",
            escape(&d.data.giorno, false)
        ));
        w.push_str(&format!(
            "            <ora>{}</ora>\n",
            escape(&d.data.ora, false)
        ));
        w.push_str("        </data>\n");
        leaf(&mut w, "identificativo", &d.identificativo);
        if let Some(m) = &d.msgid {
            leaf(&mut w, "msgid", m);
        }
        if let Some(r) = d.ricevuta {
            // Real files write the EMPTY element as `<ricevuta tipo="completa" />`.
            w.push_str(&format!("        <ricevuta tipo=\"{r}\" />\n"));
        }
        if let Some(c) = &d.consegna {
            leaf(&mut w, "consegna", c);
        }
        for r in &d.ricezione {
            leaf(&mut w, "ricezione", r);
        }
        if let Some(e) = &d.errore_esteso {
            leaf(&mut w, "errore-esteso", e);
        }
        w.push_str("    </dati>\n");
        w.push_str("</postacert>\n");
        w
    }

    /// Reads a document. Never fetches an external DTD or entity; refuses entity declarations.
    ///
    /// Tolerant of whitespace, attribute order, comments, processing instructions, an external
    /// DOCTYPE (e.g. `PUBLIC "posta certificata" "https://…"`, digest §6.2), unknown elements and
    /// missing optional elements; applies the DTD defaults (`errore="nessuno"`,
    /// `destinatari tipo="certificato"`). Zero `destinatari` is accepted here and reported by
    /// [`Daticert::validate`].
    pub fn from_xml(xml: &[u8]) -> Result<Daticert, DaticertError> {
        let text = decode(xml)?;
        let root = parse_tree(&text)?;
        from_tree(&root)
    }

    /// The DTD rules the types cannot express, as readable problems (empty when valid): at least
    /// one `destinatari`, the formats of `giorno` (`gg/mm/aaaa`), `ora` (`hh:mm:ss`) and `zona`
    /// (`[+|-]hhmm`), and text that XML 1.0 cannot carry.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // DTD: destinatari+
        if self.intestazione.destinatari.is_empty() {
            problems
                .push("<intestazione> has no <destinatari> (the DTD requires at least one)".into());
        }
        let data = &self.dati.data;
        // DTD comments: giorno "gg/mm/aaaa", ora "hh:mm:ss", zona "[+|-]hhmm".
        if parse_giorno(&data.giorno).is_none() {
            problems.push(format!(
                "<giorno> `{}` is not a date gg/mm/aaaa",
                data.giorno
            ));
        }
        if parse_ora(&data.ora).is_none() {
            problems.push(format!("<ora> `{}` is not a time hh:mm:ss", data.ora));
        }
        if !is_zona_format(&data.zona) {
            problems.push(format!(
                "<data zona=\"{}\"> is not an offset [+|-]hhmm",
                data.zona
            ));
        }
        for (name, value) in self.texts() {
            if let Some(c) = value.chars().find(|&c| !is_xml_char(c)) {
                problems.push(format!(
                    "<{name}> contains U+{:04X}, which XML 1.0 cannot carry",
                    u32::from(c)
                ));
            }
        }
        problems
    }

    /// Every text value with its element name, in document order.
    fn texts(&self) -> Vec<(&'static str, &str)> {
        let i = &self.intestazione;
        let d = &self.dati;
        let mut v = vec![("mittente", i.mittente.as_str())];
        v.extend(
            i.destinatari
                .iter()
                .map(|x| ("destinatari", x.indirizzo.as_str())),
        );
        v.push(("risposte", &i.risposte));
        v.extend(i.oggetto.as_deref().map(|x| ("oggetto", x)));
        v.push(("gestore-emittente", &d.gestore_emittente));
        v.push(("data", &d.data.zona));
        v.push(("giorno", &d.data.giorno));
        v.push(("ora", &d.data.ora));
        v.push(("identificativo", &d.identificativo));
        v.extend(d.msgid.as_deref().map(|x| ("msgid", x)));
        v.extend(d.consegna.as_deref().map(|x| ("consegna", x)));
        v.extend(d.ricezione.iter().map(|x| ("ricezione", x.as_str())));
        v.extend(d.errore_esteso.as_deref().map(|x| ("errore-esteso", x)));
        v
    }
}

impl Data {
    /// The `data` element for `instant`: Italian legal time with its `zona` (RFC 6109 §4.1–§4.2;
    /// digest §10), seconds precision.
    pub fn from_instant(instant: DateTime<Utc>) -> Data {
        Data {
            zona: time::zona(instant),
            giorno: time::giorno(instant),
            ora: time::ora(instant),
        }
    }

    /// The instant `giorno` `ora` at offset `zona` denotes. Errors name the malformed part.
    pub fn to_instant(&self) -> Result<DateTime<Utc>, DaticertError> {
        let day = parse_giorno(&self.giorno).ok_or_else(|| {
            DaticertError::Invalid(format!(
                "<giorno> `{}` is not a date gg/mm/aaaa",
                self.giorno
            ))
        })?;
        let t = parse_ora(&self.ora).ok_or_else(|| {
            DaticertError::Invalid(format!("<ora> `{}` is not a time hh:mm:ss", self.ora))
        })?;
        let offset = time::parse_zona(&self.zona).ok_or_else(|| {
            DaticertError::Invalid(format!(
                "<data zona=\"{}\"> is not an offset [+|-]hhmm",
                self.zona
            ))
        })?;
        let utc = day
            .and_time(t)
            .checked_sub_signed(chrono::Duration::seconds(i64::from(
                offset.local_minus_utc(),
            )))
            .ok_or_else(|| {
                DaticertError::Invalid(format!("<giorno> `{}` is out of range", self.giorno))
            })?;
        Ok(utc.and_utc())
    }

    /// Whether `zona` is the Italian legal offset at that local time (EU rule; digest §10): `+0100`
    /// in winter, `+0200` in summer. In the repeated autumn hour both are right; in the skipped
    /// spring hour neither is.
    pub fn check_zona(&self) -> Result<(), String> {
        let instant = self.to_instant().map_err(|e| e.to_string())?;
        let expected = time::rome_offset(instant);
        match time::parse_zona(&self.zona) {
            Some(given) if given == expected => Ok(()),
            _ => Err(format!(
                "<data zona=\"{}\"> on {} at {} is not Italian legal time (expected {})",
                self.zona,
                self.giorno,
                self.ora,
                time::format_offset(expected)
            )),
        }
    }
}

/// `gg/mm/aaaa`, a real calendar date (DTD comment on `giorno`; RFC 6109 §4.2 full-date).
fn parse_giorno(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[2] != b'/' || b[5] != b'/' {
        return None;
    }
    let dd = digits(&s[0..2])?;
    let mm = digits(&s[3..5])?;
    let yyyy = digits(&s[6..10])?;
    NaiveDate::from_ymd_opt(yyyy as i32, mm, dd)
}

/// `hh:mm:ss`, 00–23, 00–59, 00–60 (a leap second is read as the last instant of :59; RFC 6109 §4.2
/// time-second).
fn parse_ora(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, sec) = (digits(&s[0..2])?, digits(&s[3..5])?, digits(&s[6..8])?);
    if sec == 60 {
        return NaiveTime::from_hms_milli_opt(h, m, 59, 1000);
    }
    NaiveTime::from_hms_opt(h, m, sec)
}

/// `[+|-]hhmm` exactly, as the DTD comment on `zona` says (no colon).
fn is_zona_format(s: &str) -> bool {
    s.len() == 5 && time::parse_zona(s).is_some()
}

/// All ASCII digits, as a number; `None` otherwise. Callers pass 2 or 4 bytes.
fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One `<name>text</name>` line at the second indentation level.
fn leaf(w: &mut String, name: &str, value: &str) {
    w.push_str(&format!(
        "        <{name}>{}</{name}>\n",
        escape(value, false)
    ));
}

/// The characters XML 1.0 allows (XML 1.0 §2.2 Char).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text or an attribute value. `\r` becomes `&#13;` so that it survives line-end
/// normalisation; in attributes `\t` and `\n` become references so that they survive attribute
/// normalisation (XML 1.0 §2.11, §3.3.3). Characters XML 1.0 cannot carry become U+FFFD
/// ([`Daticert::validate`] reports them).
fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The document as text: UTF-8 (the declared encoding of every real file), with an optional BOM;
/// ISO-8859-1 when the declaration says so.
fn decode(xml: &[u8]) -> Result<std::borrow::Cow<'_, str>, DaticertError> {
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    match std::str::from_utf8(xml) {
        Ok(s) => Ok(std::borrow::Cow::Borrowed(s)),
        Err(e) => {
            let head: String = xml
                .iter()
                .take(100)
                .map(|&b| (b as char).to_ascii_lowercase())
                .collect();
            let decl = head.split("?>").next().unwrap_or("");
            if decl.starts_with("<?xml") && (decl.contains("iso-8859-1") || decl.contains("latin1"))
            {
                Ok(std::borrow::Cow::Owned(
                    xml.iter().map(|&b| b as char).collect(),
                ))
            } else {
                Err(DaticertError::Invalid(format!(
                    "not UTF-8: invalid byte at offset {}",
                    e.valid_up_to()
                )))
            }
        }
    }
}

/// An element of the parsed document.
#[derive(Debug)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The one child `name`, if any; two are refused (the DTD allows one).
    fn opt(&self, name: &str) -> Result<Option<&Node>, DaticertError> {
        let mut it = self.children.iter().filter(|c| c.name == name);
        let first = it.next();
        if it.next().is_some() {
            return Err(DaticertError::Invalid(format!(
                "more than one <{name}> in <{}>",
                self.name
            )));
        }
        Ok(first)
    }

    /// The one required child `name`.
    fn one(&self, name: &str) -> Result<&Node, DaticertError> {
        self.opt(name)?
            .ok_or_else(|| DaticertError::Invalid(format!("missing <{name}> in <{}>", self.name)))
    }

    /// The trimmed text of the required child `name`.
    fn text_of(&self, name: &str) -> Result<String, DaticertError> {
        Ok(self.one(name)?.text.trim().to_string())
    }

    /// The trimmed text of the optional child `name`.
    fn opt_text_of(&self, name: &str) -> Result<Option<String>, DaticertError> {
        Ok(self.opt(name)?.map(|n| n.text.trim().to_string()))
    }

    /// An enumerated attribute: `None` when absent, an error naming it when not in the DTD's list.
    fn enum_attr<T: std::str::FromStr<Err = crate::kind::UnknownValue>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, DaticertError> {
        self.attr(name)
            .map(|v| {
                v.parse::<T>().map_err(|e| {
                    DaticertError::Invalid(format!("<{} {name}=\"{v}\">: {e}", self.name))
                })
            })
            .transpose()
    }
}

/// Refuses a DOCTYPE whose internal subset declares an entity (general or parameter): no entity
/// is ever expanded, so none may be declared (billion laughs, XXE; digest §14.7).
fn check_doctype(doctype: &str) -> Result<(), DaticertError> {
    let Some(start) = doctype.find('[') else {
        return Ok(());
    };
    let subset = &doctype[start..];
    if let Some(at) = subset.to_ascii_uppercase().find("<!ENTITY") {
        let decl: String = subset[at..].chars().take(80).collect();
        return Err(DaticertError::Entity(format!(
            "the DOCTYPE internal subset declares an entity: {decl}"
        )));
    }
    Ok(())
}

/// Where the reader is: the open elements, e.g. `<postacert>/<dati>`.
fn path(stack: &[Node]) -> String {
    if stack.is_empty() {
        return "outside the root element".into();
    }
    let names: Vec<String> = stack.iter().map(|n| format!("<{}>", n.name)).collect();
    format!("inside {}", names.join("/"))
}

/// Parses the XML into a tree of elements, resolving only predefined entities and character
/// references.
fn parse_tree(xml: &str) -> Result<Node, DaticertError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| {
            DaticertError::Invalid(format!(
                "not well-formed XML at byte {} {}: {e}",
                reader.error_position(),
                path(&stack)
            ))
        })?;
        let at = reader.buffer_position();
        // The element that just ended, to attach to its parent.
        let done = match event {
            Event::DocType(t) => {
                check_doctype(&t)?;
                continue;
            }
            Event::Start(s) | Event::Empty(s) if root.is_some() => {
                return Err(DaticertError::Invalid(format!(
                    "element <{}> after the root element ends (byte {at})",
                    s.name().as_ref()
                )));
            }
            Event::Start(s) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(DaticertError::Invalid(format!(
                        "document too deep or too large at byte {at}"
                    )));
                }
                let node = element(&s, at, &stack)?;
                stack.push(node);
                continue;
            }
            Event::Empty(s) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(DaticertError::Invalid(format!(
                        "document too large at byte {at}"
                    )));
                }
                element(&s, at, &stack)?
            }
            Event::End(_) => stack.pop().ok_or_else(|| {
                DaticertError::Invalid(format!("unexpected end tag at byte {at}"))
            })?,
            Event::Text(t) => {
                push_text(&mut stack, &t.xml10_content(), at)?;
                continue;
            }
            Event::CData(t) => {
                push_text(&mut stack, &t.xml10_content(), at)?;
                continue;
            }
            Event::GeneralRef(r) => {
                let resolved = resolve_reference(&r).ok_or_else(|| {
                    DaticertError::Invalid(format!(
                        "undefined entity or bad character reference &{}; at byte {at} {}",
                        &*r,
                        path(&stack)
                    ))
                })?;
                push_text(&mut stack, &resolved, at)?;
                continue;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => continue,
        };
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => root = Some(done),
        }
    }
    if !stack.is_empty() {
        return Err(DaticertError::Invalid(format!(
            "truncated document: end of input {}",
            path(&stack)
        )));
    }
    root.ok_or_else(|| DaticertError::Invalid("no root element <postacert>".into()))
}

/// A character reference or one of the five predefined entities (XML 1.0 §4.6); nothing else.
fn resolve_reference(r: &quick_xml::events::BytesRef<'_>) -> Option<String> {
    match r.resolve_char_ref() {
        Ok(Some(c)) if is_xml_char(c) => Some(c.to_string()),
        Ok(Some(_)) | Err(_) => None,
        Ok(None) => quick_xml::escape::resolve_predefined_entity(r).map(str::to_string),
    }
}

/// A new element from its start tag, with its attributes unescaped.
fn element(
    s: &quick_xml::events::BytesStart<'_>,
    at: u64,
    stack: &[Node],
) -> Result<Node, DaticertError> {
    let name = s.name().as_ref().to_string();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let bad = |e: &dyn std::fmt::Display| {
            DaticertError::Invalid(format!(
                "bad attribute in <{name}> at byte {at} {}: {e}",
                path(stack)
            ))
        };
        let a = a.map_err(|e| bad(&e))?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| bad(&e))?;
        attrs.push((a.key.as_ref().to_string(), value.into_owned()));
    }
    Ok(Node {
        name,
        attrs,
        text: String::new(),
        children: Vec::new(),
    })
}

/// Appends character data to the open element; outside the root only whitespace is allowed.
fn push_text(stack: &mut [Node], text: &str, at: u64) -> Result<(), DaticertError> {
    match stack.last_mut() {
        Some(top) => {
            top.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(DaticertError::Invalid(format!(
            "text outside the root element at byte {at}"
        ))),
    }
}

/// Maps the tree to the types, naming what is missing or wrong.
fn from_tree(root: &Node) -> Result<Daticert, DaticertError> {
    if root.name != "postacert" {
        return Err(DaticertError::Invalid(format!(
            "root element is <{}>, expected <postacert>",
            root.name
        )));
    }
    // DTD: postacert/@tipo #REQUIRED, @errore default "nessuno".
    let tipo = root
        .enum_attr::<Tipo>("tipo")?
        .ok_or_else(|| DaticertError::Invalid("missing attribute tipo in <postacert>".into()))?;
    let errore = root
        .enum_attr::<Errore>("errore")?
        .unwrap_or(Errore::Nessuno);

    let int = root.one("intestazione")?;
    let destinatari = int
        .all("destinatari")
        .map(|n| {
            // DTD: destinatari/@tipo default "certificato".
            Ok(Destinatario {
                tipo: n
                    .enum_attr::<TipoDestinatario>("tipo")?
                    .unwrap_or(TipoDestinatario::Certificato),
                indirizzo: n.text.trim().to_string(),
            })
        })
        .collect::<Result<Vec<_>, DaticertError>>()?;
    let intestazione = Intestazione {
        mittente: int.text_of("mittente")?,
        destinatari,
        risposte: int.text_of("risposte")?,
        // The subject is kept exactly as written, spaces included.
        oggetto: int.opt("oggetto")?.map(|n| n.text.clone()),
    };

    let dat = root.one("dati")?;
    let data_node = dat.one("data")?;
    let data = Data {
        zona: data_node
            .attr("zona")
            .ok_or_else(|| DaticertError::Invalid("missing attribute zona in <data>".into()))?
            .trim()
            .to_string(),
        giorno: data_node.text_of("giorno")?,
        ora: data_node.text_of("ora")?,
    };
    let ricevuta = match dat.opt("ricevuta")? {
        // DTD: ricevuta/@tipo #REQUIRED.
        Some(n) => Some(n.enum_attr::<TipoRicevuta>("tipo")?.ok_or_else(|| {
            DaticertError::Invalid("missing attribute tipo in <ricevuta>".into())
        })?),
        None => None,
    };
    let dati = Dati {
        gestore_emittente: dat.text_of("gestore-emittente")?,
        data,
        identificativo: dat.text_of("identificativo")?,
        msgid: dat.opt_text_of("msgid")?,
        ricevuta,
        consegna: dat.opt_text_of("consegna")?,
        ricezione: dat
            .all("ricezione")
            .map(|n| n.text.trim().to_string())
            .collect(),
        errore_esteso: dat.opt_text_of("errore-esteso")?,
    };
    Ok(Daticert {
        tipo,
        errore,
        intestazione,
        dati,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn real_files() -> Vec<PathBuf> {
        let dir = repo().join("fixtures/real/daticert");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("fixtures/real/daticert")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "xml"))
            .collect();
        v.sort();
        v
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("test instant")
    }

    fn invalid(xml: &str) -> String {
        match Daticert::from_xml(xml.as_bytes()) {
            Err(DaticertError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn entity(xml: &str) -> String {
        match Daticert::from_xml(xml.as_bytes()) {
            Err(DaticertError::Entity(m)) => m,
            other => panic!("expected Entity, got {other:?}"),
        }
    }

    /// One document per tipo, with the optional elements of digest §6.2 and the shapes of §6.3.
    fn sample(tipo: Tipo) -> Daticert {
        let mut d = Daticert {
            tipo,
            errore: Errore::Nessuno,
            intestazione: Intestazione {
                mittente: "mario.rossi@pec.example.it".into(),
                destinatari: vec![
                    Destinatario {
                        tipo: TipoDestinatario::Certificato,
                        indirizzo: "ufficio@pec.other.example".into(),
                    },
                    Destinatario {
                        tipo: TipoDestinatario::Esterno,
                        indirizzo: "info@example.com".into(),
                    },
                ],
                risposte: "mario.rossi@pec.example.it".into(),
                oggetto: Some("Diffida & \"messa\" in <mora>".into()),
            },
            dati: Dati {
                gestore_emittente: "EXAMPLE PEC S.p.A.".into(),
                data: Data::from_instant(utc("2025-11-14T17:26:32Z")),
                identificativo: "opec001.20251114182632.01234.01.1.1@pec.example.it".into(),
                msgid: Some("<client-1234@host.example>".into()),
                ricevuta: None,
                consegna: None,
                ricezione: vec![],
                errore_esteso: None,
            },
        };
        let x = &mut d.dati;
        match tipo {
            Tipo::PostaCertificata => x.ricevuta = Some(TipoRicevuta::Completa),
            Tipo::Accettazione => {}
            Tipo::NonAccettazione => {
                d.errore = Errore::Altro;
                x.errore_esteso = Some("Destinatario non valido: indirizzo malformato".into());
            }
            Tipo::PresaInCarico => {
                x.ricezione = vec![
                    "ufficio@pec.other.example".into(),
                    "protocollo@pec.other.example".into(),
                ];
            }
            Tipo::AvvenutaConsegna => {
                x.ricevuta = Some(TipoRicevuta::Breve);
                x.consegna = Some("ufficio@pec.other.example".into());
            }
            Tipo::ErroreConsegna => {
                d.errore = Errore::NoDest;
                x.consegna = Some("nonexistent@pec.other.example".into());
                x.errore_esteso = Some("5.1.1 - OTHER PEC S.p.A. - indirizzo non valido".into());
            }
            Tipo::PreavvisoErroreConsegna => {
                d.errore = Errore::Altro;
                x.consegna = Some("ufficio@pec.other.example".into());
                x.errore_esteso = Some("5.4.1 - nessuna ricevuta entro 12 ore".into());
            }
            Tipo::RilevazioneVirus => {
                d.errore = Errore::Virus;
                x.consegna = Some("ufficio@pec.other.example".into());
                x.errore_esteso = Some("virus informatico rilevato".into());
            }
        }
        d
    }

    /// Runs `xmllint --nonet --noout --dtdvalid` on `xml` (the DTD also beside the file, where the
    /// DOCTYPE points): `Some((valid, stderr))`, or `None` with a notice when xmllint is absent.
    fn xmllint(xml: &str, name: &str) -> Option<(bool, String)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(format!("{name}.xml"));
        std::fs::write(&file, xml).expect("write");
        let dtd = repo().join("fixtures/reference/daticert.dtd");
        std::fs::copy(&dtd, dir.path().join("daticert.dtd")).expect("copy dtd");
        match std::process::Command::new("xmllint")
            .arg("--nonet")
            .arg("--noout")
            .arg("--dtdvalid")
            .arg(&dtd)
            .arg(&file)
            .output()
        {
            Ok(out) => Some((
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("NOTICE: xmllint not found, DTD validation of {name} skipped");
                None
            }
            Err(e) => panic!("xmllint: {e}"),
        }
    }

    /// Asserts that xmllint accepts `xml` (skipped with a notice when xmllint is absent).
    fn assert_dtd_valid(xml: &str, name: &str) {
        if let Some((valid, stderr)) = xmllint(xml, name) {
            assert!(valid, "xmllint refused {name}: {stderr}\n{xml}");
            assert!(stderr.is_empty(), "xmllint warned on {name}: {stderr}");
        }
    }

    #[test]
    fn every_real_file_reads_and_round_trips() {
        let files = real_files();
        assert_eq!(files.len(), 7, "{files:?}");
        for f in files {
            let bytes = std::fs::read(&f).expect("read");
            let d = Daticert::from_xml(&bytes).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert_eq!(d.validate(), Vec::<String>::new(), "{f:?}");
            assert_eq!(d.dati.data.check_zona(), Ok(()), "{f:?}");
            let again = Daticert::from_xml(d.to_xml().as_bytes()).expect("re-read");
            assert_eq!(again, d, "{f:?}");
            let written = d.to_xml();
            assert_dtd_valid(&written, "real");
            // The real files differ from ours only by the DOCTYPE line and the final newline.
            let ours = written.replacen(&format!("{DOCTYPE}\n"), "", 1);
            let theirs = String::from_utf8(bytes).expect("utf-8");
            assert_eq!(ours.trim_end(), theirs.trim_end(), "{f:?}");
        }
    }

    #[test]
    fn real_values_are_read_exactly() {
        let d =
            Daticert::from_xml(
                &std::fs::read(repo().join(
                    "fixtures/real/daticert/from-eml_aruba-2014_busta-trasporto_message1.xml",
                ))
                .expect("read"),
            )
            .expect("parse");
        assert_eq!(d.tipo, Tipo::PostaCertificata);
        assert_eq!(d.errore, Errore::Nessuno);
        assert_eq!(d.intestazione.oggetto.as_deref(), Some("Re: archetipo"));
        assert_eq!(d.dati.gestore_emittente, "ARUBA PEC S.p.A.");
        assert_eq!(
            d.dati.msgid.as_deref(),
            Some("<NEOEQO$8B558E13C0664DE7004C1EFB790D1A09@pec.it>")
        );
        assert_eq!(d.dati.ricevuta, Some(TipoRicevuta::Completa));
        assert_eq!(
            d.dati.data.to_instant().expect("instant"),
            utc("2014-11-07T15:52:00Z")
        );

        let p = Daticert::from_xml(
            &std::fs::read(
                repo().join("fixtures/real/daticert/postecom-2012_posta-certificata.xml"),
            )
            .expect("read"),
        )
        .expect("parse");
        assert_eq!(
            p.intestazione.destinatari[0].tipo,
            TipoDestinatario::Esterno
        );
        assert_eq!(p.dati.msgid, None);
        assert_eq!(p.dati.data.zona, "+0200");
        assert_eq!(
            p.dati.data.to_instant().expect("instant"),
            utc("2012-09-21T13:16:38Z")
        );
    }

    #[test]
    fn every_tipo_round_trips_validates_and_snapshots() {
        for &tipo in Tipo::ALL {
            let d = sample(tipo);
            let xml = d.to_xml();
            assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE postacert SYSTEM \"daticert.dtd\">\n"));
            assert!(!xml.contains('\r'));
            assert!(xml.contains("<msgid>&lt;client-1234@host.example&gt;</msgid>"));
            assert_eq!(
                Daticert::from_xml(xml.as_bytes()).expect("re-read"),
                d,
                "{tipo}"
            );
            assert_eq!(d.validate(), Vec::<String>::new(), "{tipo}");
            assert_dtd_valid(&xml, tipo.as_str());
            insta::assert_snapshot!(format!("to_xml_{tipo}"), xml);
        }
    }

    #[test]
    fn tipo_shapes_follow_digest_6_2() {
        let pic = sample(Tipo::PresaInCarico).to_xml();
        assert!(pic.contains(
            "        <ricezione>ufficio@pec.other.example</ricezione>\n        <ricezione>protocollo@pec.other.example</ricezione>\n"
        ));
        let ec = sample(Tipo::ErroreConsegna).to_xml();
        assert!(ec.contains("<postacert tipo=\"errore-consegna\" errore=\"no-dest\">"));
        assert!(ec.contains(
            "        <consegna>nonexistent@pec.other.example</consegna>\n        <errore-esteso>5.1.1 - OTHER PEC S.p.A. - indirizzo non valido</errore-esteso>\n    </dati>"
        ));
        let ac = sample(Tipo::AvvenutaConsegna).to_xml();
        assert!(ac.contains("        <ricevuta tipo=\"breve\" />\n        <consegna>"));
        let acc = sample(Tipo::Accettazione).to_xml();
        assert!(!acc.contains("<ricevuta") && !acc.contains("<consegna"));
    }

    #[test]
    fn the_digest_acceptance_example_is_written_byte_for_byte() {
        // digest §6.3, first example, plus our DOCTYPE line.
        let mut d = sample(Tipo::Accettazione);
        d.intestazione.oggetto = Some("Diffida".into());
        let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE postacert SYSTEM "daticert.dtd">
<postacert tipo="accettazione" errore="nessuno">
    <intestazione>
        <mittente>mario.rossi@pec.example.it</mittente>
        <destinatari tipo="certificato">ufficio@pec.other.example</destinatari>
        <destinatari tipo="esterno">info@example.com</destinatari>
        <risposte>mario.rossi@pec.example.it</risposte>
        <oggetto>Diffida</oggetto>
    </intestazione>
    <dati>
        <gestore-emittente>EXAMPLE PEC S.p.A.</gestore-emittente>
        <data zona="+0100">
            <giorno>14/11/2025</giorno>
            <ora>18:26:32</ora>
        </data>
        <identificativo>opec001.20251114182632.01234.01.1.1@pec.example.it</identificativo>
        <msgid>&lt;client-1234@host.example&gt;</msgid>
    </dati>
</postacert>
"#;
        assert_eq!(d.to_xml(), expected);
    }

    #[test]
    fn the_reader_is_tolerant_of_real_world_variation() {
        // Attribute order, no indentation, CRLF, comments, a stylesheet PI, an external PUBLIC
        // DOCTYPE with a URL (digest §6.2, [ITTEL]), a BOM, defaults omitted, unknown elements,
        // CDATA and character references.
        let xml = "\u{FEFF}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
            <?xml-stylesheet type=\"text/xsl\" href=\"https://example.invalid/x.xsl\"?>\r\n\
            <!DOCTYPE postacert PUBLIC \"posta certificata\" \"https://www.telecompost.it/dtd/postacert.dtd\">\r\n\
            <!-- a comment -->\
            <postacert tipo = 'avvenuta-consegna'><intestazione>\
            <mittente>\r\n  a@pec.example.it  </mittente>\
            <destinatari>b@pec.example.it</destinatari>\
            <risposte>a@pec.example.it</risposte></intestazione>\
            <dati><gestore-emittente>G&#65;</gestore-emittente>\
            <data zona=\"+0100\"><ora>08:00:00</ora><giorno>02/01/2025</giorno></data>\
            <identificativo><![CDATA[id<1>]]></identificativo><futuro>x</futuro>\
            <ricevuta tipo=\"sintetica\"/><consegna>b@pec.example.it</consegna></dati></postacert>\r\n";
        let d = Daticert::from_xml(xml.as_bytes()).expect("tolerant read");
        assert_eq!(d.tipo, Tipo::AvvenutaConsegna);
        assert_eq!(d.errore, Errore::Nessuno);
        assert_eq!(d.intestazione.mittente, "a@pec.example.it");
        assert_eq!(
            d.intestazione.destinatari[0].tipo,
            TipoDestinatario::Certificato
        );
        assert_eq!(d.intestazione.oggetto, None);
        assert_eq!(d.dati.gestore_emittente, "GA");
        assert_eq!(d.dati.identificativo, "id<1>");
        assert_eq!(d.dati.data.giorno, "02/01/2025");
        assert_eq!(d.dati.ricevuta, Some(TipoRicevuta::Sintetica));
        assert_eq!(d.dati.msgid, None);
        assert_eq!(d.dati.consegna.as_deref(), Some("b@pec.example.it"));
    }

    #[test]
    fn iso_8859_1_documents_are_read_when_declared() {
        let mut xml = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>".to_vec();
        xml.extend_from_slice(
            sample(Tipo::Accettazione)
                .to_xml()
                .split_once("?>")
                .unwrap()
                .1
                .as_bytes(),
        );
        let xml = String::from_utf8(xml)
            .unwrap()
            .replace("Diffida", "Perch\u{e9}");
        let latin1: Vec<u8> = xml.chars().map(|c| c as u32 as u8).collect();
        let d = Daticert::from_xml(&latin1).expect("latin-1");
        assert!(d.intestazione.oggetto.unwrap().starts_with("Perch\u{e9}"));
        // Undeclared non-UTF-8 bytes are refused with their offset.
        let m = match Daticert::from_xml(b"<postacert tipo=\"accettazione\">\xe9") {
            Err(DaticertError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(m.contains("not UTF-8") && m.contains("31"), "{m}");
    }

    #[test]
    fn entity_declarations_are_refused() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE postacert [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
]>
<postacert tipo="accettazione"><intestazione><mittente>&lol2;</mittente></intestazione></postacert>"#;
        assert!(
            entity(laughs).contains("<!ENTITY lol"),
            "{}",
            entity(laughs)
        );
        let xxe = r#"<?xml version="1.0"?>
<!DOCTYPE postacert [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<postacert tipo="accettazione"><intestazione><mittente>&x;</mittente></intestazione></postacert>"#;
        assert!(entity(xxe).contains("file:///etc/passwd"));
        let parameter = r#"<!DOCTYPE postacert [<!ENTITY % p SYSTEM "http://127.0.0.1/evil.dtd"> %p;]><postacert/>"#;
        entity(parameter);
        // A reference to an entity nobody declared is not expanded either.
        let m = invalid(
            r#"<postacert tipo="accettazione"><intestazione><mittente>&x;</mittente></intestazione></postacert>"#,
        );
        assert!(
            m.contains("&x;") && m.contains("<postacert>/<intestazione>/<mittente>"),
            "{m}"
        );
        // An internal subset without entities is harmless and ignored.
        let ok = sample(Tipo::Accettazione).to_xml().replace(
            DOCTYPE,
            r#"<!DOCTYPE postacert [<!ATTLIST postacert x CDATA "y">]>"#,
        );
        assert!(Daticert::from_xml(ok.as_bytes()).is_ok());
    }

    #[test]
    fn truncated_documents_are_refused_naming_where() {
        let xml = sample(Tipo::PresaInCarico).to_xml();
        let end = xml.find("</postacert>").expect("end") + "</postacert>".len();
        for cut in 0..end {
            if !xml.is_char_boundary(cut) {
                continue;
            }
            match Daticert::from_xml(&xml.as_bytes()[..cut]) {
                Err(DaticertError::Invalid(m)) => assert!(!m.is_empty()),
                other => panic!("prefix of {cut} bytes: {other:?}"),
            }
        }
        let cut = xml.find("<identificativo>").expect("identificativo") + 5;
        let m = invalid(&xml[..cut]);
        assert!(m.contains("<dati>"), "{m}");
        let cut = xml.find("</dati>").expect("dati");
        let m = invalid(&xml[..cut]);
        assert!(
            m.contains("truncated") && m.contains("<postacert>/<dati>"),
            "{m}"
        );
    }

    #[test]
    fn missing_and_wrong_parts_are_named() {
        let xml = sample(Tipo::AvvenutaConsegna).to_xml();
        let without = |from: &str, to: &str| {
            let a = xml.find(from).expect(from);
            let b = xml.find(to).expect(to) + to.len();
            format!("{}{}", &xml[..a], &xml[b..])
        };
        let m = invalid(&without("<identificativo>", "</identificativo>"));
        assert_eq!(m, "missing <identificativo> in <dati>");
        let m = invalid(&without("<risposte>", "</risposte>"));
        assert_eq!(m, "missing <risposte> in <intestazione>");
        let m = invalid(&without("<data ", "</data>"));
        assert_eq!(m, "missing <data> in <dati>");
        let m = invalid(&xml.replace(" zona=\"+0100\"", ""));
        assert_eq!(m, "missing attribute zona in <data>");
        let m = invalid(&xml.replace("tipo=\"avvenuta-consegna\" ", ""));
        assert_eq!(m, "missing attribute tipo in <postacert>");
        let m = invalid(&xml.replace("avvenuta-consegna", "consegnata"));
        assert!(
            m.contains("<postacert tipo=\"consegnata\">") && m.contains("not a valid Tipo"),
            "{m}"
        );
        let m = invalid(&xml.replace("errore=\"nessuno\"", "errore=\"boh\""));
        assert!(m.contains("errore=\"boh\""), "{m}");
        let m = invalid(&xml.replace("<ricevuta tipo=\"breve\" />", "<ricevuta />"));
        assert_eq!(m, "missing attribute tipo in <ricevuta>");
        let m = invalid(&xml.replace("</risposte>", "</risposte><risposte>x</risposte>"));
        assert_eq!(m, "more than one <risposte> in <intestazione>");
        let m = invalid("<?xml version=\"1.0\"?><html/>");
        assert_eq!(m, "root element is <html>, expected <postacert>");
        assert_eq!(invalid(""), "no root element <postacert>");
        let m = invalid(&format!("{xml}<postacert/>"));
        assert!(m.contains("after the root element"), "{m}");
        let m = invalid(&xml.replace("</giorno>", "</ora>"));
        assert!(m.contains("<postacert>/<dati>/<data>/<giorno>"), "{m}");
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let xml = format!("<postacert>{}", "<a>".repeat(100_000));
        assert!(invalid(&xml).contains("too deep"));
        let xml = format!("<postacert>{}</postacert>", "<a/>".repeat(MAX_ELEMENTS + 1));
        assert!(invalid(&xml).contains("too large"));
    }

    #[test]
    fn data_follows_italian_legal_time_across_both_changes() {
        // EU rule, 2024: +0100 until 2024-03-31 01:00Z, +0200 until 2024-10-27 01:00Z.
        let cases = [
            ("2024-03-31T00:59:59Z", "+0100", "31/03/2024", "01:59:59"),
            ("2024-03-31T01:00:00Z", "+0200", "31/03/2024", "03:00:00"),
            ("2024-10-27T00:59:59Z", "+0200", "27/10/2024", "02:59:59"),
            ("2024-10-27T01:00:00Z", "+0100", "27/10/2024", "02:00:00"),
        ];
        for (instant, zona, giorno, ora) in cases {
            let d = Data::from_instant(utc(instant));
            assert_eq!(
                (d.zona.as_str(), d.giorno.as_str(), d.ora.as_str()),
                (zona, giorno, ora)
            );
            assert_eq!(d.to_instant().expect("instant"), utc(instant));
            assert_eq!(d.check_zona(), Ok(()));
        }
    }

    #[test]
    fn check_zona_refuses_the_wrong_offset_and_the_skipped_hour() {
        let data = |zona: &str, giorno: &str, ora: &str| Data {
            zona: zona.into(),
            giorno: giorno.into(),
            ora: ora.into(),
        };
        let e = data("+0200", "14/11/2014", "18:26:32")
            .check_zona()
            .unwrap_err();
        assert!(e.contains("expected +0100"), "{e}");
        assert!(
            data("+0100", "14/07/2014", "18:26:32")
                .check_zona()
                .is_err()
        );
        // 02:30 on 31/03/2024 does not exist in Rome.
        assert!(
            data("+0100", "31/03/2024", "02:30:00")
                .check_zona()
                .is_err()
        );
        assert!(
            data("+0200", "31/03/2024", "02:30:00")
                .check_zona()
                .is_err()
        );
        // 02:30 on 27/10/2024 happens twice: both offsets are right.
        assert!(data("+0200", "27/10/2024", "02:30:00").check_zona().is_ok());
        assert!(data("+0100", "27/10/2024", "02:30:00").check_zona().is_ok());
        let e = data("+0100", "31/02/2024", "10:00:00")
            .check_zona()
            .unwrap_err();
        assert!(e.contains("<giorno> `31/02/2024`"), "{e}");
        match data("0100", "01/02/2024", "10:00:00").to_instant() {
            Err(DaticertError::Invalid(m)) => assert!(m.contains("zona=\"0100\""), "{m}"),
            other => panic!("{other:?}"),
        }
        match data("+0100", "01/02/2024", "25:00:00").to_instant() {
            Err(DaticertError::Invalid(m)) => assert!(m.contains("<ora> `25:00:00`"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A leap second is read as the end of :59.
        assert!(data("+0100", "01/01/2017", "00:59:60").to_instant().is_ok());
    }

    #[test]
    fn validate_reports_dtd_rules_the_types_cannot_express() {
        let mut d = sample(Tipo::Accettazione);
        d.intestazione.destinatari.clear();
        d.dati.data = Data {
            zona: "+01:00".into(),
            giorno: "2025-11-14".into(),
            ora: "6:26:32".into(),
        };
        d.intestazione.mittente = "a\u{1}b@pec.example.it".into();
        let problems = d.validate();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("no <destinatari>"));
        assert!(problems[1].contains("<giorno> `2025-11-14`"));
        assert!(problems[2].contains("<ora> `6:26:32`"));
        assert!(problems[3].contains("zona=\"+01:00\""));
        assert!(problems[4].contains("<mittente> contains U+0001"));
        // The writer still produces well-formed XML, without the control character; the DTD
        // oracle refuses it for the missing destinatari.
        let xml = d.to_xml();
        assert!(xml.contains("a\u{FFFD}b@pec.example.it"));
        assert!(Daticert::from_xml(xml.as_bytes()).is_ok());
        if let Some((valid, stderr)) = xmllint(&xml, "no-destinatari") {
            assert!(!valid && stderr.contains("destinatari+"), "{stderr}");
        }
    }

    proptest! {
        #[test]
        fn from_instant_to_instant_is_the_identity(secs in 0i64..4_102_444_800) {
            // 1970-01-01 .. 2100-01-01, second precision.
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            let d = Data::from_instant(t);
            prop_assert_eq!(d.to_instant().unwrap(), t);
            prop_assert_eq!(d.check_zona(), Ok(()));
            prop_assert!(parse_giorno(&d.giorno).is_some() && parse_ora(&d.ora).is_some());
            prop_assert!(is_zona_format(&d.zona));
        }

        #[test]
        fn any_text_round_trips(
            oggetto in "[^\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{fffe}\u{ffff}]{0,40}",
            addr in "[a-z0-9.<>&\"']{1,20}@[a-z.]{1,10}",
        ) {
            let mut d = sample(Tipo::PresaInCarico);
            d.intestazione.oggetto = Some(oggetto);
            d.intestazione.mittente = addr.clone();
            d.dati.ricezione.push(addr);
            let back = Daticert::from_xml(d.to_xml().as_bytes()).unwrap();
            prop_assert_eq!(back, d);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Daticert::from_xml(&bytes);
        }
    }
}
