() => {
  // Files dropped anywhere on the chat join the conversation like files dropped on the question box.
  const forward = (event) => {
    const chat = event.target.closest && event.target.closest('#chatbot');
    if (!chat || !event.dataTransfer || !event.dataTransfer.files.length) return;
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
}
