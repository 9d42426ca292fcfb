// dsocr playground: sends one image or PDF to POST /v1/chat/completions with stream: true, shows
// the raw stream, a markdown rendering of it, and the grounding boxes of every page over the page.
//
// The model's output is untrusted: it only ever reaches the page as text (textContent) or through
// renderMarkdown(), which escapes every character that HTML gives a meaning to before it adds its
// own tags. The page's Content-Security-Policy (server/playground.cpp) allows no inline script.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = 'dsocr.playground.apiKey';
  const PAGE_SPLIT = '<--- Page Split --->';

  const ui = {
    form: $('request-form'),
    dropZone: $('drop-zone'),
    fileInput: $('file-input'),
    fileInfo: $('file-info'),
    customPrompt: $('custom-prompt'),
    maxTokens: $('max-tokens'),
    pageRange: $('page-range'),
    apiKey: $('api-key'),
    rememberKey: $('remember-key'),
    send: $('send'),
    stop: $('stop'),
    status: $('status'),
    error: $('error'),
    rendered: $('rendered'),
    raw: $('raw'),
    pages: $('pages'),
  };

  // What was picked: {file, isPdf, previewUrl}.
  let picked = null;
  // The request in flight: {controller, started, text, chunks, usageTokens, pagesDone, ...}.
  let run = null;

  // ---------------------------------------------------------------------------------------------
  // Markdown: a small, safe subset (headings, paragraphs, lists, pipe tables, the model's HTML
  // tables, fenced code, bold, italic, inline code, rules). Grounding tags are removed first.

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ({
      '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
    })[c]);
  }

  // Inline markup on one line of raw text: code spans are kept verbatim, the rest is escaped and
  // then given <strong>/<em>; the patterns only ever see escaped text, so they cannot open a tag.
  function renderInline(text) {
    return text.split(/(`[^`]+`)/).map((part) => {
      if (part.length > 1 && part.startsWith('`') && part.endsWith('`')) {
        return '<code>' + escapeHtml(part.slice(1, -1)) + '</code>';
      }
      return escapeHtml(part)
        .replace(/\*\*(\S(?:.*?\S)?)\*\*/g, '<strong>$1</strong>')
        .replace(/(^|[^\w])__(\S(?:.*?\S)?)__(?=[^\w]|$)/g, '$1<strong>$2</strong>')
        .replace(/\*(\S(?:.*?\S)?)\*/g, '<em>$1</em>')
        .replace(/(^|[^\w])_(\S(?:.*?\S)?)_(?=[^\w]|$)/g, '$1<em>$2</em>');
    }).join('');
  }

  // Grounding blocks are for the box view; the rendered text drops them (as the official rewrite
  // does), and drops a block still being streamed rather than flashing its half.
  function stripGrounding(text) {
    return text
      .replace(/<\|ref\|>[\s\S]*?<\|\/ref\|><\|det\|>[\s\S]*?<\|\/det\|>\n?/g, '')
      .replace(/<\|ref\|>[\s\S]*$/, '')
      .replace(/<\|det\|>[\s\S]*?<\|\/det\|>/g, '');
  }

  function splitRow(line) {
    let row = line.trim();
    if (row.startsWith('|')) row = row.slice(1);
    if (row.endsWith('|')) row = row.slice(0, -1);
    return row.split('|').map((cell) => cell.trim());
  }

  const isTableSeparator = (line) => /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/.test(line);

  function renderPipeTable(lines) {
    const header = splitRow(lines[0]);
    let html = '<table><thead><tr>' + header.map((c) => '<th>' + renderInline(c) + '</th>').join('') +
      '</tr></thead><tbody>';
    for (const line of lines.slice(2)) {
      html += '<tr>' + splitRow(line).map((c) => '<td>' + renderInline(c) + '</td>').join('') + '</tr>';
    }
    return html + '</tbody></table>';
  }

  // The model writes tables as HTML. They are parsed into an inert document (DOMParser runs no
  // script and loads nothing) and rebuilt from cell text alone: no attribute but a numeric
  // colspan/rowspan survives.
  function renderHtmlTable(source) {
    const doc = new DOMParser().parseFromString(source, 'text/html');
    const table = doc.querySelector('table');
    if (!table) return '<p>' + renderInline(source) + '</p>';
    let html = '<table><tbody>';
    for (const tr of table.querySelectorAll('tr')) {
      html += '<tr>';
      for (const cell of tr.children) {
        const tag = cell.tagName === 'TH' ? 'th' : 'td';
        let attrs = '';
        for (const name of ['colspan', 'rowspan']) {
          const n = parseInt(cell.getAttribute(name) || '', 10);
          if (n > 1 && n < 1000) attrs += ` ${name}="${n}"`;
        }
        html += `<${tag}${attrs}>` + escapeHtml(cell.textContent.trim()) + `</${tag}>`;
      }
      html += '</tr>';
    }
    return html + '</tbody></table>';
  }

  function renderMarkdown(source) {
    const lines = stripGrounding(source).replace(/\r\n?/g, '\n').split('\n');
    const out = [];
    let paragraph = [];
    let list = null;  // {ordered, items}
    const flushParagraph = () => {
      if (paragraph.length) out.push('<p>' + paragraph.map(renderInline).join('<br>') + '</p>');
      paragraph = [];
    };
    const flushList = () => {
      if (!list) return;
      const tag = list.ordered ? 'ol' : 'ul';
      out.push(`<${tag}>` + list.items.map((i) => '<li>' + renderInline(i) + '</li>').join('') +
               `</${tag}>`);
      list = null;
    };
    const flush = () => { flushParagraph(); flushList(); };

    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      let m;
      if (/^\s*```/.test(line)) {
        flush();
        const code = [];
        for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i]);
        out.push('<pre><code>' + escapeHtml(code.join('\n')) + '</code></pre>');
      } else if (line.trim() === PAGE_SPLIT) {
        flush();
        out.push('<hr class="page-split">');
      } else if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
        flush();
        const level = m[1].length;
        out.push(`<h${level}>` + renderInline(m[2].replace(/\s+#+\s*$/, '')) + `</h${level}>`);
      } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flush();
        out.push('<hr>');
      } else if (/^\s*<table[\s>]/i.test(line)) {
        flush();
        const chunk = [line];
        while (!/<\/table>/i.test(chunk[chunk.length - 1]) && i + 1 < lines.length) {
          chunk.push(lines[++i]);
        }
        out.push(renderHtmlTable(chunk.join('\n')));
      } else if (/^\s*\|/.test(line) && i + 1 < lines.length && isTableSeparator(lines[i + 1])) {
        flush();
        const rows = [line, lines[++i]];
        while (i + 1 < lines.length && /^\s*\|/.test(lines[i + 1])) rows.push(lines[++i]);
        out.push(renderPipeTable(rows));
      } else if ((m = /^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/.exec(line))) {
        flushParagraph();
        const ordered = m[2] !== undefined;
        if (list && list.ordered !== ordered) flushList();
        if (!list) list = {ordered, items: []};
        list.items.push(m[3]);
      } else if (line.trim() === '') {
        flush();
      } else {
        flushList();
        paragraph.push(line.trim());
      }
    }
    flush();
    return out.join('\n');
  }

  // ---------------------------------------------------------------------------------------------
  // Pages and boxes.

  const LABEL_COLOURS = {
    title: '#d62728', text: '#1f77b4', image: '#2ca02c', table: '#9467bd',
    sub_title: '#ff7f0e', equation: '#8c564b', image_caption: '#e377c2', table_caption: '#17becf',
  };
  const SPARE_COLOURS = ['#bcbd22', '#7f7f7f', '#393b79', '#ad494a', '#637939', '#843c39'];

  function labelColour(label) {
    if (LABEL_COLOURS[label]) return LABEL_COLOURS[label];
    let hash = 0;
    for (const c of label) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
    return SPARE_COLOURS[hash % SPARE_COLOURS.length];
  }

  function translucent(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }

  const isBox = (b) => Array.isArray(b) && b.length === 4 && b.every(Number.isFinite);

  // One page object of the API's `pages` extension, drawn as a figure: the picked image itself
  // (an image request) or a white page of the page's aspect ratio (a PDF, which the browser cannot
  // render without a library), with every block's boxes placed in percent of the page's size.
  function drawPage(page) {
    const width = Number(page.width);
    const height = Number(page.height);
    const figure = document.createElement('figure');
    figure.className = 'page';
    figure.dataset.index = String(page.index);
    const surface = document.createElement('div');
    surface.className = 'page-surface';
    if (width > 0 && height > 0) surface.style.aspectRatio = `${width} / ${height}`;
    const input = run ? run.input : picked;
    if (!input.isPdf && input.previewUrl) {
      const img = document.createElement('img');
      img.src = input.previewUrl;
      img.alt = `page ${page.page_number || page.index + 1}`;
      surface.appendChild(img);
    } else {
      surface.setAttribute('role', 'img');
      surface.setAttribute('aria-label', `page ${page.page_number || page.index + 1} (layout only)`);
    }
    let drawn = 0;
    for (const block of page.blocks || []) {
      const boxes = Array.isArray(block.boxes) ? block.boxes : [block.bbox];
      for (const bbox of boxes) {
        if (!isBox(bbox) || !(width > 0 && height > 0)) continue;
        const [x1, y1, x2, y2] = bbox;
        const colour = labelColour(String(block.label || ''));
        const box = document.createElement('div');
        box.className = 'box';
        box.style.left = `${(100 * x1) / width}%`;
        box.style.top = `${(100 * y1) / height}%`;
        box.style.width = `${(100 * Math.max(0, x2 - x1)) / width}%`;
        box.style.height = `${(100 * Math.max(0, y2 - y1)) / height}%`;
        box.style.borderColor = colour;
        box.style.backgroundColor = translucent(colour, 0.08);
        const label = document.createElement('span');
        label.className = 'box-label';
        label.textContent = block.label || '(text)';
        label.style.color = colour;
        label.style.borderColor = colour;
        if (y1 / height < 0.04) label.style.bottom = 'auto';  // no room above: inside the box
        box.appendChild(label);
        surface.appendChild(box);
        drawn++;
      }
    }
    const caption = document.createElement('figcaption');
    caption.textContent = `Page ${page.page_number || page.index + 1}: ${width}×${height} px, ` +
      `${drawn} box${drawn === 1 ? '' : 'es'}` +
      (page.finish_reason ? `, ${page.finish_reason}` : '');
    figure.append(surface, caption);
    // Pages arrive in order, but keep the figures sorted whatever happens.
    const after = [...ui.pages.children].find((f) => Number(f.dataset.index) > page.index);
    ui.pages.insertBefore(figure, after || null);
  }

  function showPreview() {
    ui.pages.replaceChildren();
    if (!picked || picked.isPdf) return;
    const figure = document.createElement('figure');
    figure.className = 'page preview';
    const surface = document.createElement('div');
    surface.className = 'page-surface';
    const img = document.createElement('img');
    img.src = picked.previewUrl;
    img.alt = 'the picked image';
    surface.appendChild(img);
    const caption = document.createElement('figcaption');
    caption.textContent = 'Preview (boxes appear when the page is done)';
    figure.append(surface, caption);
    ui.pages.appendChild(figure);
  }

  // ---------------------------------------------------------------------------------------------
  // Input.

  async function isPdfFile(file) {
    if (file.type === 'application/pdf' || /\.pdf$/i.test(file.name)) return true;
    const head = new Uint8Array(await file.slice(0, 5).arrayBuffer());
    return String.fromCharCode(...head) === '%PDF-';
  }

  async function pick(file) {
    if (!file) return;
    // The old preview goes (showPreview() clears the figures) unless a running answer still draws it.
    const inUse = run && run.controller && run.input === picked;
    if (picked && picked.previewUrl && !inUse) URL.revokeObjectURL(picked.previewUrl);
    const isPdf = await isPdfFile(file);
    picked = {file, isPdf, previewUrl: isPdf ? null : URL.createObjectURL(file)};
    ui.fileInfo.textContent = `${file.name} (${isPdf ? 'PDF' : file.type || 'image'}, ` +
      `${(file.size / 1024).toFixed(1)} KiB)`;
    showPreview();
  }

  function readAsDataUrl(file, mime) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => {
        // A file the browser could not type comes as application/octet-stream: name it.
        let url = String(reader.result);
        if (mime) url = url.replace(/^data:[^;,]*/, 'data:' + mime);
        resolve(url);
      };
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // The request.

  function authHeaders() {
    const key = ui.apiKey.value.trim();
    return key ? {Authorization: 'Bearer ' + key} : {};
  }

  // An HTTP error answer as one line: the OpenAI error shape when the body has it.
  async function httpError(response) {
    let message = response.statusText;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON: keep the status text */ }
    return `HTTP ${response.status}: ${message}`;
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function updateStatus(state) {
    if (!run) return;
    const seconds = ((performance.now() - run.started) / 1000).toFixed(1);
    const tokens = run.usageTokens ?? run.chunks;
    ui.status.textContent = `${state}: ${tokens} token${tokens === 1 ? '' : 's'} received, ` +
      `${seconds} s, pages done: ${run.pagesDone}` +
      (run.finishReason ? ` (finish: ${run.finishReason})` : '');
  }

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      if (run) ui.rendered.innerHTML = renderMarkdown(run.text);
    });
  }

  function handleChunk(chunk) {
    if (chunk.error) {
      throw new Error('Stream error: ' + (chunk.error.message || JSON.stringify(chunk.error)));
    }
    const choice = chunk.choices && chunk.choices[0];
    const content = choice && choice.delta && choice.delta.content;
    if (content) {
      run.text += content;
      run.chunks++;
      ui.raw.append(content);  // a text node: appending keeps a long stream linear
      scheduleRender();
    }
    if (choice && choice.finish_reason) run.finishReason = choice.finish_reason;
    if (chunk.usage && Number.isFinite(chunk.usage.completion_tokens)) {
      run.usageTokens = chunk.usage.completion_tokens;
    }
    if (Array.isArray(chunk.pages)) {
      for (const page of chunk.pages) {
        if (!run.pagesDrawn) {  // the first page replaces the preview
          ui.pages.replaceChildren();
          run.pagesDrawn = true;
        }
        drawPage(page);
        run.pagesDone++;
      }
    }
    updateStatus('Streaming');
  }

  // Reads "data:" events off the body; returns when [DONE] arrives (or the body ends).
  async function readStream(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let data = [];
    for (;;) {
      const {value, done} = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        // A "\r" that ends the buffer may be half of a "\r\n" still on its way.
        if (!done && newline === buffer.length - 1 && buffer[newline] === '\r') break;
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
        if (line === '') {  // the blank line ends an event
          const payload = data.join('\n');
          data = [];
          if (payload === '[DONE]') return true;
          if (payload) handleChunk(JSON.parse(payload));
        } else if (line.startsWith('data:')) {
          data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
        }  // comments (": keep-alive") and other fields are ignored
      }
      if (done) return false;
    }
  }

  async function modelId(signal) {
    const response = await fetch('/v1/models', {headers: authHeaders(), signal});
    if (!response.ok) throw new Error(await httpError(response));
    const body = await response.json();
    return body.data[0].id;
  }

  async function buildRequest(signal) {
    const prompt = ui.form.elements.prompt.value;
    const model = await modelId(signal);
    const content = [];
    if (picked.isPdf) {
      content.push({type: 'file', file: {
        file_data: await readAsDataUrl(picked.file, 'application/pdf'), filename: picked.file.name,
      }});
    } else {
      content.push({type: 'image_url', image_url: {url: await readAsDataUrl(picked.file)}});
    }
    const request = {model, stream: true, stream_options: {include_usage: true}};
    if (prompt === 'custom') {
      content.push({type: 'text', text: ui.customPrompt.value});
    } else {
      request.task = prompt;  // "document" or "free": the server's official prompts
    }
    request.messages = [{role: 'user', content}];
    const maxTokens = parseInt(ui.maxTokens.value, 10);
    if (maxTokens > 0) request.max_tokens = maxTokens;
    if (picked.isPdf && ui.pageRange.value.trim()) request.pages = ui.pageRange.value.trim();
    return request;
  }

  function setRunning(running) {
    ui.send.disabled = running;
    ui.stop.disabled = !running;
  }

  async function send() {
    ui.error.hidden = true;
    if (!picked) {
      showError('Pick an image or a PDF first.');
      return;
    }
    if (ui.form.elements.prompt.value === 'custom' && !ui.customPrompt.value.trim()) {
      showError('Write the custom prompt first.');
      return;
    }
    const controller = new AbortController();
    run = {input: picked, controller, started: performance.now(), text: '', chunks: 0, usageTokens: null,
           pagesDone: 0, pagesDrawn: false, finishReason: null};
    ui.raw.textContent = '';
    ui.rendered.replaceChildren();
    showPreview();
    setRunning(true);
    updateStatus('Sending');
    const ticker = setInterval(() => updateStatus('Streaming'), 250);
    let outcome = 'Failed';
    try {
      const request = await buildRequest(controller.signal);
      const response = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: {'Content-Type': 'application/json', ...authHeaders()},
        body: JSON.stringify(request),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await httpError(response));
      const complete = await readStream(response);
      if (!complete) throw new Error('The stream ended before [DONE].');
      outcome = 'Done';
    } catch (e) {
      if (e.name === 'AbortError') {
        outcome = 'Stopped';
      } else {
        showError(e.message || String(e));
        controller.abort();  // let go of a stream that is still open
      }
    } finally {
      clearInterval(ticker);
      ui.rendered.innerHTML = renderMarkdown(run.text);
      const previewCaption = ui.pages.querySelector('.preview figcaption');
      if (previewCaption) previewCaption.textContent = 'No page boxes in this answer';
      updateStatus(outcome);
      setRunning(false);
      run.controller = null;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring.

  function rememberKey() {
    try {
      if (ui.rememberKey.checked) {
        localStorage.setItem(KEY_STORAGE, ui.apiKey.value);
      } else {
        localStorage.removeItem(KEY_STORAGE);
      }
    } catch (_) { /* storage disabled: the key lives only in the field */ }
  }

  function init() {
    try {
      const stored = localStorage.getItem(KEY_STORAGE);
      if (stored !== null) {
        ui.apiKey.value = stored;
        ui.rememberKey.checked = true;
      }
    } catch (_) { /* storage disabled */ }
    ui.rememberKey.addEventListener('change', rememberKey);
    ui.apiKey.addEventListener('input', () => { if (ui.rememberKey.checked) rememberKey(); });

    for (const radio of ui.form.elements.prompt) {
      radio.addEventListener('change', () => {
        ui.customPrompt.disabled = ui.form.elements.prompt.value !== 'custom';
      });
    }
    ui.fileInput.addEventListener('change', () => pick(ui.fileInput.files[0]));
    ui.dropZone.addEventListener('dragover', (e) => {
      e.preventDefault();
      ui.dropZone.classList.add('dragging');
    });
    ui.dropZone.addEventListener('dragleave', () => ui.dropZone.classList.remove('dragging'));
    ui.dropZone.addEventListener('drop', (e) => {
      e.preventDefault();
      ui.dropZone.classList.remove('dragging');
      if (e.dataTransfer.files.length) pick(e.dataTransfer.files[0]);
    });
    ui.form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!run || !run.controller) send();
    });
    ui.stop.addEventListener('click', () => {
      if (run && run.controller) run.controller.abort();
    });
  }

  init();
})();
