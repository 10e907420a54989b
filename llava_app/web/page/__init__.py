"""What the browser gets: the Gradio page's layout and wiring (``main``: ``build_demo``), its components
(``components``: ``Page``), the edit bar, earlier chats and Share (``branches``), the API-only endpoints
(``api``), the read-only ``/share`` page (``share``), and the page's script and stylesheet (``page.js``,
``style.css``)."""
