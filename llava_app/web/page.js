() => {
  // Files dropped on the chat, or on a strip that already shows pictures (Gradio's gallery takes
  // drops only while empty), join the conversation like files dropped on the question box.
  const forward = (event) => {
    const on = (selector) => event.target.closest && event.target.closest(selector);
    const strip = on('#gallery') && document.querySelector('#gallery .gallery-item');
    if (!(on('#chatbot') || strip) || !event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    if (event.type !== 'drop') return;
    const input = document.querySelector('#question input[type=file]');
    if (!input) return;
    const files = new DataTransfer();
    for (const file of event.dataTransfer.files) files.items.add(file);
    input.files = files.files;
    input.dispatchEvent(new Event('change', {bubbles: true}));
  };
  document.addEventListener('dragover', forward);
  document.addEventListener('drop', forward);

  // A click on a thumbnail (in the strip or in the chat) opens it large, with its label.
  const close = () => { const box = document.getElementById('lightbox'); if (box) box.remove(); };
  document.addEventListener('click', (event) => {
    if (event.target.closest && event.target.closest('#lightbox')) { close(); return; }
    const img = event.target.closest && event.target.closest('#gallery .thumbnail-item img, #chatbot .thumbnail-item img');
    if (!img) return;
    event.preventDefault();
    event.stopPropagation();
    const box = document.createElement('div');
    box.id = 'lightbox';
    box.setAttribute('role', 'dialog');
    box.setAttribute('aria-label', img.alt);
    const large = document.createElement('img');
    large.src = img.src;
    large.alt = img.alt;
    const label = document.createElement('div');
    label.className = 'lightbox-label';
    label.textContent = img.alt;
    box.append(large, label);
    document.body.appendChild(box);
  }, true);
  document.addEventListener('keydown', (event) => { if (event.key === 'Escape') close(); });
}
