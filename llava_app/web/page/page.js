() => {
  // An answer that never reaches the page (Gradio 6.31's client). The client keeps one event stream per tab and
  // drops it when the server says "close_stream", which the server says as the tab's last running event ends.
  // A question sent in that instant was lost: the client learnt its event id while the old stream was still
  // open, so it opened no new one, and the stream then closed under it; the answer was written and saved on the
  // server but never shown. Here a close that comes while an event the page joined has not ended is not passed
  // on: the stream is opened again under it (same address, same abort signal) and the answer arrives.
  if (!window.__llavaStreamKept) {
    window.__llavaStreamKept = true;
    const open = new Set();  // events joined whose end the page has not seen
    const joining = new Set();  // joins sent, not yet answered
    const native = window.fetch;
    const address = (input) => String(typeof input === 'string' ? input : (input && input.url) || '');
    const ENDS = /"msg": ?"(process_completed|close_stream)"/;
    const read = (block) => {
      const line = block.split('\n').find((l) => l.startsWith('data:'));
      try { return line ? JSON.parse(line.slice(5)) : null; } catch (e) { return null; }
    };
    window.fetch = function (input, init) {
      const url = address(input);
      if (url.includes('/queue/join')) {  // its event is open before the client learns its id
        const joined = native.apply(this, arguments).then((response) => response.clone().json()
          .then((body) => { if (body && body.event_id) open.add(body.event_id); }, () => {})
          .then(() => response));
        const settled = joined.catch(() => {});
        joining.add(settled);
        settled.then(() => joining.delete(settled));
        return joined;
      }
      if (!url.includes('/queue/data?')) return native.apply(this, arguments);
      return native.apply(this, arguments).then((response) => {
        if (!response.ok || !response.body) return response;
        let reader = response.body.getReader();
        let decoder = new TextDecoder();
        let buffer = '';
        let reopened = 0;
        const encoder = new TextEncoder();
        const body = new ReadableStream({
          async pull(controller) {
            for (;;) {
              const {done, value} = await reader.read();
              if (done) { controller.close(); return; }
              buffer += decoder.decode(value, {stream: true}).replace(/\r\n?/g, '\n');
              let out = '';
              let cut;
              while ((cut = buffer.indexOf('\n\n')) >= 0) {
                const block = buffer.slice(0, cut + 2);
                buffer = buffer.slice(cut + 2);
                if (block.includes('"event_id"')) reopened = 0;
                // only an event's end and a close matter here: the many messages of a streamed answer are not
                // parsed a second time (the client parses each)
                const message = ENDS.test(block) ? read(block) : null;
                if (message && message.event_id && message.msg === 'process_completed') open.delete(message.event_id);
                if (message && message.msg === 'close_stream') {
                  await Promise.all([...joining]);
                  if (open.size && reopened < 3) {
                    const again = await native.call(window, input, init);
                    if (again.ok && again.body) {
                      reader.cancel().catch(() => {});
                      reader = again.body.getReader();
                      decoder = new TextDecoder();
                      buffer = '';
                      reopened += 1;
                      break;
                    }
                  }
                }
                out += block;
              }
              if (out) { controller.enqueue(encoder.encode(out)); return; }
            }
          },
          cancel(reason) { return reader.cancel(reason); },
        });
        return new Response(body, {status: response.status, statusText: response.statusText,
                                   headers: response.headers});
      });
    };
  }

  // The script's own texts in the reader's language, chosen as the server chooses (Chinese for zh-*, else
  // English); the server writes the catalogue's "script." texts in here (i18n.page_script).
  const texts = LLAVA_TEXTS;
  const first = ((navigator.languages && navigator.languages[0]) || navigator.language || '').toLowerCase();
  const lang = first.startsWith('zh') ? 'zh-CN' : 'en';
  const say = (name) => (texts[lang] || {})[name] || texts.en[name];
  // An element of the page's own parts (the large view, the dialog): its tag, class and text.
  const make = (tag, className, text) => {
    const el = document.createElement(tag);
    if (tag === 'button') el.type = 'button';
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  };

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

  // No jump on load: Gradio mounts the page's parts one by one (the chat last) and the font comes late, so the
  // page is shown once its parts and its font are in place (style.css hides it until then; 4 s at most).
  const shown = () => document.body.classList.add('llava-ready');
  const mounted = () => document.querySelector('#chatbot .bubble-wrap, #chatbot .placeholder-content')
    && document.querySelector('#question textarea') && document.querySelector('#send');
  const reveal = () => (document.fonts ? document.fonts.ready : Promise.resolve())
    .then(() => requestAnimationFrame(() => requestAnimationFrame(shown)));
  if (mounted()) reveal();
  else {
    const watch = new MutationObserver(() => { if (mounted()) { watch.disconnect(); reveal(); } });
    watch.observe(document.body, {childList: true, subtree: true});
  }
  setTimeout(shown, 4000);

  // One place for a dropped picture: files dropped anywhere on the page (the chat, the strip, the question
  // box and its border) join the conversation through the question box, which puts them in the strip with the
  // next label (Gradio's box otherwise keeps a file dropped on its border as a pending attachment, and its
  // gallery takes drops only while empty).
  const forward = (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types || []).includes('Files')) return;
    const here = event.target.closest && event.target.closest('#main');
    if (!here) return;
    event.preventDefault();
    event.stopPropagation();
    if (event.type !== 'drop' || !event.dataTransfer.files.length) return;
    const input = document.querySelector('#question input[type=file]');
    if (!input) return;
    const files = new DataTransfer();
    for (const file of event.dataTransfer.files) files.items.add(file);
    input.files = files.files;
    input.dispatchEvent(new Event('change', {bubbles: true}));
  };
  for (const type of ['dragenter', 'dragover', 'drop']) document.addEventListener(type, forward, true);

  // The strip: each remove button named for its picture ("Remove Image 4"), a sign when more pictures than
  // fit are off to the side; the chat's "Scroll down" button named for what it does.
  const name = () => {
    for (const item of document.querySelectorAll('#gallery .gallery-item')) {
      const caption = item.querySelector('.caption-label');
      const remove = item.querySelector('.delete-button');
      if (!caption || !remove) continue;
      const label = say('remove_image').replace('{label}', caption.textContent.split(' · ')[0].trim());
      if (remove.getAttribute('aria-label') !== label) {
        remove.setAttribute('aria-label', label);
        remove.setAttribute('title', label);
      }
    }
    const wrap = document.querySelector('#gallery .grid-wrap');
    const gallery = document.getElementById('gallery');
    if (wrap && gallery) {
      const more = wrap.scrollWidth - wrap.clientWidth - wrap.scrollLeft > 4;
      if (gallery.classList.contains('more-right') !== more) gallery.classList.toggle('more-right', more);
    }
    follow();
    jumpShown();
    placeChips();
  };

  // Following the newest message: a new question (FOLLOW in main.py) and "Jump to the latest" turn it on, the
  // person scrolling up turns it off. While on, every change of the chat keeps its foot in view: an answer's
  // last update adds its marks and footer at once, more than Gradio's own autoscroll follows.
  let seen = {top: 0, height: 0};
  const follow = () => {
    const wrap = document.querySelector('#chatbot .bubble-wrap');
    if (!wrap) return;
    if (wrap.scrollTop < seen.top - 4 && wrap.scrollHeight === seen.height) window.llavaFollowing = false;
    if (window.llavaFollowing && wrap.scrollHeight - wrap.clientHeight - wrap.scrollTop > 1) {
      wrap.scrollTop = wrap.scrollHeight;
    }
    seen = {top: wrap.scrollTop, height: wrap.scrollHeight};
  };
  const upward = (event) => {
    if (!(event.target.closest && event.target.closest('#chatbot'))) return;
    if (event.type === 'wheel' ? event.deltaY < 0 : event.type === 'touchmove'
        || ['ArrowUp', 'PageUp', 'Home'].includes(event.key)) window.llavaFollowing = false;
  };
  ['wheel', 'touchmove', 'keydown'].forEach((type) => document.addEventListener(type, upward, {capture: true, passive: true}));

  // "Jump to the latest": over the chat's foot whenever the person has scrolled up from the newest message.
  const jumpShown = () => {
    const chat = document.getElementById('chatbot');
    const wrap = chat && chat.querySelector('.bubble-wrap');
    if (!wrap) return;
    let jump = document.getElementById('jump-latest');
    if (!jump) {
      jump = document.createElement('button');
      jump.id = 'jump-latest';
      jump.type = 'button';
      jump.textContent = '↓ ' + say('latest_short');
      jump.setAttribute('aria-label', say('latest'));
      jump.setAttribute('title', say('latest'));
      jump.addEventListener('click', () => {
        window.llavaFollowing = true;
        wrap.scrollTo({top: wrap.scrollHeight});
        jump.hidden = true;
      });
      chat.appendChild(jump);
    }
    const away = wrap.scrollHeight - wrap.clientHeight - wrap.scrollTop > 120;
    if (jump.hidden === away) jump.hidden = !away;
  };
  // Once a frame at most, before it is drawn: a streamed answer changes the page many times a frame, and each
  // run measures the strip and the chat (a layout each time the page changed in between).
  let naming = 0;
  const nameSoon = () => {
    if (!naming) naming = requestAnimationFrame(() => { naming = 0; name(); });
  };
  new MutationObserver(nameSoon).observe(document.body, {childList: true, subtree: true});
  document.addEventListener('scroll', nameSoon, true);
  window.addEventListener('resize', nameSoon);

  // A drawer (earlier chats, settings) closes on a tap outside it.
  document.addEventListener('click', (event) => {
    const body = document.body;
    if (!body.classList.contains('show-chats') && !body.classList.contains('show-side')) return;
    const inside = event.target.closest && event.target.closest('#chats-side, #side, #chats-toggle, #settings-toggle');
    if (inside || !document.body.contains(event.target)) return;
    body.classList.remove('show-chats', 'show-side');
    event.preventDefault();  // the tap closes the drawer and does nothing else
    event.stopPropagation();
  }, true);

  // A click on a thumbnail (in the strip or in the chat) or on a picture an answer points at opens it large,
  // with its label (and the answer's boxes). There the person can drag a box (or tap a point) and choose "Ask
  // about this region": a chip over the question box says so, and the region (in the picture's own pixels)
  // goes with the next question (SEND in main.py reads window.llavaRegions).
  window.llavaRegions = window.llavaRegions || [];
  const close = () => { const box = document.getElementById('lightbox'); if (box) box.remove(); };
  const numberOf = (label) => { const m = /(\d+)/.exec(label || ''); return m ? parseInt(m[1], 10) : null; };
  // The chips sit on the question box's top edge, in the page's body: nothing is added to the parts Gradio draws.
  const placeChips = () => {
    const row = document.getElementById('region-chips');
    const composer = document.getElementById('composer');
    if (!row || !composer) return;
    const rect = composer.getBoundingClientRect();
    row.style.left = Math.max(4, rect.left) + 'px';
    row.style.maxWidth = Math.max(120, rect.width) + 'px';
    row.style.top = Math.max(4, rect.top - row.offsetHeight / 2) + 'px';  // on the box's top edge
  };
  const chips = () => {
    let row = document.getElementById('region-chips');
    if (!window.llavaRegions.length) {
      if (row) row.remove();
      return;
    }
    if (!row) {
      row = document.createElement('div');
      row.id = 'region-chips';
      document.body.appendChild(row);
    }
    row.replaceChildren(...window.llavaRegions.map((region, k) => {
      const chip = make('span', 'region-chip', say(region.point ? 'point_chip' : 'region_chip')
        .replace('{label}', region.label));
      const remove = make('button', '', '✕');
      remove.setAttribute('aria-label', say('remove_region').replace('{label}', region.label));
      remove.addEventListener('click', () => { window.llavaRegions.splice(k, 1); chips(); });
      chip.appendChild(remove);
      return chip;
    }));
    placeChips();
  };
  window.llavaTakeRegions = () => { window.llavaRegions = []; chips(); };
  const open = (img, overlay) => {
    close();
    const caption = (img.alt || '').trim();
    const label = caption.split(' · ')[0];
    const box = document.createElement('div');
    box.id = 'lightbox';
    box.setAttribute('role', 'dialog');
    box.setAttribute('aria-label', caption);
    const pic = document.createElement('span');
    pic.className = 'lightbox-pic';
    const large = document.createElement('img');
    large.src = img.src;
    large.alt = caption;
    large.draggable = false;
    pic.appendChild(large);
    if (overlay) for (const mark of overlay.querySelectorAll('.box')) pic.appendChild(mark.cloneNode(true));
    const draft = document.createElement('span');
    draft.className = 'region-draft';
    draft.hidden = true;
    pic.appendChild(draft);
    const bar = make('div', 'lightbox-bar');
    const ask = make('button', 'lightbox-ask', say('ask_region'));
    ask.disabled = true;
    const save = make('a', 'lightbox-download', '↓ ' + say('download'));  // the picture, as the chat holds it
    save.href = img.src;
    save.download = label.replace(/\s+/g, '-') + '.png';
    const shut = make('button', 'lightbox-close', say('close'));
    bar.append(make('span', 'lightbox-label', caption), make('span', 'lightbox-hint', say('region_hint')), ask, save,
               shut);
    box.append(pic, bar);
    document.body.appendChild(box);
    // The picture as large as the window allows (small pictures too), so the marks drawn over it line up.
    const fit = () => {
      const w = large.naturalWidth || 1, h = large.naturalHeight || 1;
      const scale = Math.min(window.innerWidth * 0.92 / w, (window.innerHeight - 120) * 0.9 / h);
      pic.style.width = Math.round(w * scale) + 'px';
      pic.style.height = Math.round(h * scale) + 'px';
    };
    if (large.complete) fit(); else large.addEventListener('load', fit);
    let start = null, region = null;
    const at = (event) => {
      const rect = large.getBoundingClientRect();
      const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
      const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
      return {x, y, sx: large.naturalWidth / rect.width, sy: large.naturalHeight / rect.height};
    };
    pic.addEventListener('pointerdown', (event) => {
      event.preventDefault();
      start = at(event);
      pic.setPointerCapture(event.pointerId);
    });
    pic.addEventListener('pointermove', (event) => {
      if (!start) return;
      const now = at(event);
      Object.assign(draft.style, {left: Math.min(start.x, now.x) + 'px', top: Math.min(start.y, now.y) + 'px',
        width: Math.abs(now.x - start.x) + 'px', height: Math.abs(now.y - start.y) + 'px'});
      draft.hidden = false;
      draft.classList.remove('point');
    });
    pic.addEventListener('pointerup', (event) => {
      if (!start) return;
      const end = at(event);
      const moved = Math.abs(end.x - start.x) > 6 || Math.abs(end.y - start.y) > 6;
      if (moved) {
        region = {box: [Math.min(start.x, end.x) * start.sx, Math.min(start.y, end.y) * start.sy,
                        Math.max(start.x, end.x) * start.sx, Math.max(start.y, end.y) * start.sy].map(Math.round)};
      } else {  // a tap: a point (drawn as a dot)
        region = {point: [Math.round(end.x * end.sx), Math.round(end.y * end.sy)]};
        Object.assign(draft.style, {left: end.x + 'px', top: end.y + 'px', width: '', height: ''});
        draft.hidden = false;
        draft.classList.add('point');
      }
      start = null;
      ask.disabled = numberOf(label) === null;
    });
    ask.addEventListener('click', () => {
      if (!region) return;
      window.llavaRegions.push(Object.assign({image: numberOf(label), label}, region));
      chips();
      close();
      const question = document.querySelector('#question textarea');
      if (question) question.focus();
    });
    shut.addEventListener('click', close);
    box.addEventListener('click', (event) => { if (event.target === box) close(); });
  };
  document.addEventListener('click', (event) => {
    if (!event.target.closest || event.target.closest('#lightbox')) return;
    const pointed = event.target.closest('#chatbot .boxes-pic');
    const img = pointed ? pointed.querySelector('img')
      : event.target.closest('#gallery .thumbnail-item img, #chatbot .thumbnail-item img');
    if (!img) return;
    event.preventDefault();
    event.stopPropagation();
    open(img, pointed);
  }, true);
  document.addEventListener('keydown', (event) => { if (event.key === 'Escape') close(); });

  // An answer's boxes: hovering, focusing or tapping a label lights its box (and dims the others).
  const light = (event) => {
    const label = event.target.closest && event.target.closest('.box-label');
    const figure = label && label.closest('.boxes-fig');
    if (!figure) return;
    const key = Array.from(label.classList).find((name) => /^box-\d+$/.test(name));
    const on = ['mouseover', 'focusin', 'click'].includes(event.type);
    for (const lit of figure.querySelectorAll('.lit')) lit.classList.remove('lit');
    figure.classList.toggle('has-lit', on);
    if (on && key) for (const mark of figure.querySelectorAll('.' + key)) mark.classList.add('lit');
  };
  ['mouseover', 'mouseout', 'focusin', 'focusout', 'click'].forEach((type) => document.addEventListener(type, light));

  // The chat's and the list's links ("✎ Edit", "‹ 2/3 ›", open, rename, delete an earlier chat) are
  // actions: the hidden button's event reads window.llavaAction (page/branches.py: ACTION_JS).
  document.addEventListener('click', (event) => {
    const link = event.target.closest && event.target.closest('a[href^="#llava-"]');
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    let action = link.getAttribute('href').slice('#llava-'.length);
    const run = () => {
      const go = document.querySelector('#turn-action-go');
      if (!go) return;
      window.llavaAction = action;
      go.click();
      if (action.startsWith('edit-')) {
        const box = document.querySelector('#question textarea');
        if (box) setTimeout(() => box.focus(), 300);
      }
    };
    if (action.startsWith('rename-')) {
      ask(say('rename_prompt'), link.dataset.title || '', (title) => { action += ':' + title; run(); });
    } else if (action.startsWith('delete-')) {
      ask(say('delete_confirm'), null, run);
    } else {
      if (action.startsWith('open-')) document.body.classList.remove('show-side', 'show-chats');  // phone: the chat
      run();
    }
  }, true);

  // The page's own dialog (not the browser's prompt/confirm): a question, a text box when ``value`` is a
  // string, OK and Cancel; ``done`` gets the text (or nothing) on OK. Enter is OK, Escape and a click outside
  // are Cancel.
  const ask = (question, value, done) => {
    const old = document.getElementById('llava-dialog');
    if (old) old.remove();
    const shade = document.createElement('div');
    shade.id = 'llava-dialog';
    const box = document.createElement('div');
    box.className = 'dialog-box';
    box.setAttribute('role', 'dialog');
    box.setAttribute('aria-modal', 'true');
    box.setAttribute('aria-label', question);
    const text = document.createElement('p');
    text.textContent = question;
    box.appendChild(text);
    let input = null;
    if (typeof value === 'string') {
      input = document.createElement('input');
      input.type = 'text';
      input.value = value;
      input.setAttribute('aria-label', question);
      box.appendChild(input);
    }
    const row = make('div', 'dialog-buttons');
    const cancel = make('button', 'dialog-cancel', say('cancel'));
    const ok = make('button', 'dialog-ok', say('ok'));
    row.append(cancel, ok);
    box.appendChild(row);
    shade.appendChild(box);
    document.body.appendChild(shade);
    const close = () => shade.remove();
    cancel.addEventListener('click', close);
    ok.addEventListener('click', () => { close(); done(input ? input.value : undefined); });
    shade.addEventListener('click', (event) => { if (event.target === shade) close(); });
    shade.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') close();
      if (event.key === 'Enter') ok.click();
    });
    (input || ok).focus();
    if (input) input.select();
  };
}
