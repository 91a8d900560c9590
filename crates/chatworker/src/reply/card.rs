//! A card builder over the `google-apps-card-v1` types: the widgets Chat
//! apps use most, in a few calls each, and Chat's size limit checked before
//! anything is sent.
//!
//! ```
//! use chatworker::card::{Button, CardBuilder, Section};
//!
//! # fn main() -> Result<(), chatworker::card::CardTooLarge> {
//! let card = CardBuilder::new()
//!     .header("Ticket 42", "Printer on fire")
//!     .section(
//!         Section::titled("Details")
//!             .decorated("Priority", "High")
//!             .text("Reported by Ada.")
//!             .buttons([
//!                 Button::action("Take it", "take", [("ticket", "42")]),
//!                 Button::link("Open", "https://example.com/42"),
//!             ]),
//!     )
//!     .build()?;
//! assert_eq!(card.sections.len(), 1);
//! # Ok(())
//! # }
//! ```

use google_apps_card_v1::model as m;

/// The largest card Chat accepts, as serialized JSON (32 KB).
pub const MAX_CARD_BYTES: usize = 32 * 1024;

/// A card that would be refused: how large it is, and where the bulk is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the card is {bytes} bytes, over Chat's {limit}-byte limit; the largest part is section {section} widget {widget} ({widget_bytes} bytes)"
)]
pub struct CardTooLarge {
    /// The card's size.
    pub bytes: usize,
    /// The limit.
    pub limit: usize,
    /// The index of the section holding the largest widget.
    pub section: usize,
    /// That widget's index in its section.
    pub widget: usize,
    /// That widget's size.
    pub widget_bytes: usize,
}

/// Checks a card (built here or not) against Chat's size limit.
pub fn check(card: &m::Card) -> Result<(), CardTooLarge> {
    let bytes = size(card);
    if bytes <= MAX_CARD_BYTES {
        return Ok(());
    }
    let mut largest = (0, 0, 0);
    for (s, section) in card.sections.iter().enumerate() {
        for (w, widget) in section.widgets.iter().enumerate() {
            let n = size(widget);
            if n > largest.2 {
                largest = (s, w, n);
            }
        }
    }
    Err(CardTooLarge {
        bytes,
        limit: MAX_CARD_BYTES,
        section: largest.0,
        widget: largest.1,
        widget_bytes: largest.2,
    })
}

fn size<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// Builds a [`m::Card`].
#[derive(Clone, Debug, Default)]
pub struct CardBuilder {
    card: m::Card,
}

impl CardBuilder {
    /// An empty card.
    pub fn new() -> Self {
        Self::default()
    }

    /// The header: a title and a subtitle (may be empty).
    pub fn header(mut self, title: impl Into<String>, subtitle: impl Into<String>) -> Self {
        let header = self.card.header.take().unwrap_or_default();
        self.card = self
            .card
            .set_header(header.set_title(title).set_subtitle(subtitle));
        self
    }

    /// An image in the header, round (`circle`, for avatars) or square.
    pub fn header_image(
        mut self,
        url: impl Into<String>,
        alt: impl Into<String>,
        circle: bool,
    ) -> Self {
        let header = self.card.header.take().unwrap_or_default();
        let shape = if circle {
            m::widget::ImageType::Circle
        } else {
            m::widget::ImageType::Square
        };
        self.card = self.card.set_header(
            header
                .set_image_url(url)
                .set_image_alt_text(alt)
                .set_image_type(shape),
        );
        self
    }

    /// Adds a section.
    pub fn section(mut self, section: Section) -> Self {
        self.card.sections.push(section.0);
        self
    }

    /// The card, if Chat will accept its size.
    pub fn build(self) -> Result<m::Card, CardTooLarge> {
        check(&self.card)?;
        Ok(self.card)
    }
}

/// A section of widgets, in order.
#[derive(Clone, Debug, Default)]
pub struct Section(m::card::Section);

impl Section {
    /// A section without a header.
    pub fn new() -> Self {
        Self::default()
    }

    /// A section with a header.
    pub fn titled(header: impl Into<String>) -> Self {
        Self(m::card::Section::new().set_header(header))
    }

    fn push(mut self, widget: m::Widget) -> Self {
        self.0.widgets.push(widget);
        self
    }

    /// A paragraph of text (Chat's card formatting applies).
    pub fn text(self, text: impl Into<String>) -> Self {
        self.push(m::Widget::new().set_text_paragraph(m::TextParagraph::new().set_text(text)))
    }

    /// A labelled value: a small label above, the text below.
    pub fn decorated(self, label: impl Into<String>, text: impl Into<String>) -> Self {
        self.push(
            m::Widget::new()
                .set_decorated_text(m::DecoratedText::new().set_top_label(label).set_text(text)),
        )
    }

    /// A labelled value with a button beside it.
    pub fn decorated_with_button(
        self,
        label: impl Into<String>,
        text: impl Into<String>,
        button: Button,
    ) -> Self {
        self.push(
            m::Widget::new().set_decorated_text(
                m::DecoratedText::new()
                    .set_top_label(label)
                    .set_text(text)
                    .set_button(button.0),
            ),
        )
    }

    /// A row of buttons.
    pub fn buttons(self, buttons: impl IntoIterator<Item = Button>) -> Self {
        let list = m::ButtonList::new().set_buttons(buttons.into_iter().map(|b| b.0));
        self.push(m::Widget::new().set_button_list(list))
    }

    /// An image.
    pub fn image(self, url: impl Into<String>, alt: impl Into<String>) -> Self {
        self.push(m::Widget::new().set_image(m::Image::new().set_image_url(url).set_alt_text(alt)))
    }

    /// A horizontal line.
    pub fn divider(self) -> Self {
        self.push(m::Widget::new().set_divider(m::Divider::new()))
    }

    /// Two or more columns of text paragraphs side by side.
    pub fn columns<I, S>(self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let items = columns.into_iter().map(|text| {
            m::columns::Column::new().set_widgets([m::columns::column::Widgets::new()
                .set_text_paragraph(m::TextParagraph::new().set_text(text))])
        });
        self.push(m::Widget::new().set_columns(m::Columns::new().set_column_items(items)))
    }

    /// A grid of titled items, `columns` wide.
    pub fn grid<I, S>(self, title: impl Into<String>, columns: i32, items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let items = items
            .into_iter()
            .map(|title| m::grid::GridItem::new().set_title(title));
        self.push(
            m::Widget::new().set_grid(
                m::Grid::new()
                    .set_title(title)
                    .set_column_count(columns)
                    .set_items(items),
            ),
        )
    }

    /// A drop-down list named `name`, with `(label, value)` options.
    pub fn dropdown<I, L, V>(
        self,
        name: impl Into<String>,
        label: impl Into<String>,
        options: I,
    ) -> Self
    where
        I: IntoIterator<Item = (L, V)>,
        L: Into<String>,
        V: Into<String>,
    {
        let items = options.into_iter().map(|(text, value)| {
            m::selection_input::SelectionItem::new()
                .set_text(text)
                .set_value(value)
        });
        self.push(
            m::Widget::new().set_selection_input(
                m::SelectionInput::new()
                    .set_name(name)
                    .set_label(label)
                    .set_type(m::selection_input::SelectionType::Dropdown)
                    .set_items(items),
            ),
        )
    }

    /// A one-line text field named `name`.
    pub fn text_input(self, name: impl Into<String>, label: impl Into<String>) -> Self {
        self.push(
            m::Widget::new().set_text_input(m::TextInput::new().set_name(name).set_label(label)),
        )
    }
}

/// A card button.
#[derive(Clone, Debug)]
pub struct Button(m::Button);

impl Button {
    /// Sends the app a click for the typed action `action`: its
    /// [`CardAction::NAME`](super::action::CardAction::NAME) and its fields
    /// as parameters. The handler registered with [`crate::App::action`]
    /// for that type receives them back.
    pub fn for_action<A: super::action::CardAction>(
        text: impl Into<String>,
        action: &A,
    ) -> Result<Self, super::action::ActionError> {
        Ok(Self::action(
            text,
            A::NAME,
            super::action::to_parameters(action)?,
        ))
    }

    /// The button as the card model has it.
    pub fn into_inner(self) -> m::Button {
        self.0
    }

    /// Opens `url` in the browser.
    pub fn link(text: impl Into<String>, url: impl Into<String>) -> Self {
        Self(
            m::Button::new()
                .set_text(text)
                .set_on_click(m::OnClick::new().set_open_link(m::OpenLink::new().set_url(url))),
        )
    }

    /// Sends the app a card-click event for `function` with `parameters`.
    pub fn action<I, K, V>(
        text: impl Into<String>,
        function: impl Into<String>,
        parameters: I,
    ) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let parameters = parameters.into_iter().map(|(key, value)| {
            m::action::ActionParameter::new()
                .set_key(key)
                .set_value(value)
        });
        let action = m::Action::new()
            .set_function(function)
            .set_parameters(parameters);
        Self(
            m::Button::new()
                .set_text(text)
                .set_on_click(m::OnClick::new().set_action(action)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_widget_builds_and_serializes_as_chat_expects() {
        let card = CardBuilder::new()
            .header("Title", "Sub")
            .header_image("https://example.com/a.png", "avatar", true)
            .section(
                Section::titled("All")
                    .text("para")
                    .decorated("Label", "value")
                    .decorated_with_button("L", "v", Button::link("go", "https://example.com"))
                    .buttons([Button::action("Do", "do_it", [("k", "v")])])
                    .image("https://example.com/i.png", "img")
                    .divider()
                    .columns(["left", "right"])
                    .grid("Grid", 2, ["a", "b"])
                    .dropdown("pick", "Pick", [("One", "1")])
                    .text_input("note", "Note"),
            )
            .build()
            .expect("small enough");
        let json = serde_json::to_value(&card).expect("json");
        let widgets = json["sections"][0]["widgets"].as_array().expect("widgets");
        let kinds: Vec<&str> = widgets
            .iter()
            .map(|w| {
                w.as_object()
                    .and_then(|o| o.keys().next())
                    .map_or("", |k| k.as_str())
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "textParagraph",
                "decoratedText",
                "decoratedText",
                "buttonList",
                "image",
                "divider",
                "columns",
                "grid",
                "selectionInput",
                "textInput"
            ]
        );
        // Enums serialize as integers, as Google's clients send them.
        assert_eq!(json["header"]["imageType"], 1, "CIRCLE");
        assert_eq!(
            widgets[3]["buttonList"]["buttons"][0]["onClick"]["action"]["parameters"][0]["key"],
            "k"
        );
    }

    #[test]
    fn a_card_over_32_kb_is_refused_with_its_largest_widget() {
        let err = CardBuilder::new()
            .section(Section::new().text("small"))
            .section(Section::new().text("tiny").text("x".repeat(40_000)))
            .build()
            .expect_err("too large");
        assert_eq!((err.section, err.widget), (1, 1));
        assert!(err.bytes > MAX_CARD_BYTES && err.widget_bytes > 40_000);
        assert!(err.to_string().contains("section 1 widget 1"), "{err}");
        assert!(
            CardBuilder::new()
                .section(Section::new().text("x".repeat(30_000)))
                .build()
                .is_ok()
        );
    }
}
