() => {
  // The script's own texts in the reader's language, chosen as the server chooses (Chinese for zh-*, else
  // English); the server writes the catalogue's "script." texts in here (i18n.page_script).
  const texts = LLAVA_TEXTS;
  const first = ((navigator.languages && navigator.languages[0]) || navigator.language || '').toLowerCase();
  const lang = first.startsWith('zh') ? 'zh-CN' : 'en';
  const say = (name) => (texts[lang] || {})[name] || texts.en[name];

  // Gradio titles its toasts "Warning", "Error", "Info" in English on every page: the title in the reader's
  // language (the message under it comes from the server already in that language).
  if (lang !== 'en') {
    const titles = {Warning: say('toast_warning'), Error: say('toast_error'), Info: say('toast_info'),
                    Success: say('toast_success')};
    const retitle = () => {
      for (const title of document.querySelectorAll('.toast-title')) {
        const walker = document.createTreeWalker(title, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
          const word = node.nodeValue.trim();
          if (titles[word]) node.nodeValue = node.nodeValue.replace(word, titles[word]);
        }
      }
    };
    new MutationObserver(retitle).observe(document.body, {childList: true, subtree: true, characterData: true});
  }

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

  // The chat's and the list's links ("✎ Edit", "‹ 2/3 ›", open, rename, delete an earlier chat) are
  // actions: the hidden button's event reads window.llavaAction (page/branches.py: ACTION_JS).
  document.addEventListener('click', (event) => {
    const link = event.target.closest && event.target.closest('a[href^="#llava-"]');
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    let action = link.getAttribute('href').slice('#llava-'.length);
    if (action.startsWith('rename-')) {
      const title = window.prompt(say('rename_prompt'), link.dataset.title || '');
      if (title === null) return;
      action += ':' + title;
    } else if (action.startsWith('delete-')) {
      if (!window.confirm(say('delete_confirm'))) return;
    } else if (action.startsWith('open-')) {
      document.body.classList.remove('show-side');  // on a phone: back to the chat
    }
    const go = document.querySelector('#turn-action-go');
    if (!go) return;
    window.llavaAction = action;
    go.click();
    if (action.startsWith('edit-')) {
      const box = document.querySelector('#question textarea');
      if (box) setTimeout(() => box.focus(), 300);
    }
  }, true);
}
