"""The page's text in English and Simplified Chinese (keys for ``gr.I18n``; no gradio here).

What the server writes (notices, warnings, the meter) is in the message catalogue
(``llava_app.messages``), rendered by ``localize`` in the reader's language.

The browser's language picks the table (``zh-CN``, ``zh``; anything else gets English).
Keys have no dots (the frontend reads a dot as a nested key) and get the ``PREFIX`` in
the tables, because a bare key such as ``chatbot`` names one of Gradio's own groups of
strings and would show as "[object Object]".
"""

from __future__ import annotations

from llava_app.messages import CATALOGUE, localize  # noqa: F401 - localize: how the web layer renders a message

EN = {
    "title": "## Chat with your photos",
    "media_section": "Videos and PDFs",
    "video_frames": "Keyframes taken from a video (evenly spaced)",
    "pdf_pages": "PDF pages to read (empty: from the first, as many as fit)",
    "settings": "Settings",
    "chat_placeholder": "**Drop pictures here** (or paste a screenshot, or attach them with the clip in the box "
                        "below), then ask about them. Each picture gets a label you can use in your questions: "
                        "\"compare Image 1 and Image 2\". Enter sends.",
    "model_prefix": "Model:",
    "random_banner": "**Test model with random weights:** its answers are random words, not descriptions of your "
                     "images.",
    "gallery": "Images (drop several; they stay for the whole conversation)",
    "chatbot": "Conversation",
    "question": "Ask about your images…",
    "send": "Send",
    "stop": "Stop",
    "regenerate": "Regenerate",
    "undo": "Undo",
    "new_chat": "New chat",
    "parameters": "Parameters",
    "system_prompt": "System prompt",
    "temperature": "Temperature (0 = greedy)",
    "top_p": "Top-p",
    "max_new_tokens": "Max new tokens",
    "model_sees": "What the model sees",
    "no_prompt": "No prompt yet.",
    "prompt": "Prompt (image placeholders shown as the model's image token)",
    "examples": "**Examples** (click one: its images join this conversation and its question goes in the box)",
    "example_describe": "Describe a scene",
    "example_ocr": "Read a receipt",
    "example_compare": "Compare two pictures",
    "example_followup": "Chart, then a follow-up",
    "example_diagram": "Explain a diagram",
    "model_section": "Model",
    "model_picker": "Model to use (the conversation is kept)",
    "load_model": "Load model",
    "model_loaded": "Loaded. The conversation is kept: the next answer reads its images again with this model.",
    "export_section": "Export / import",
    "export_markdown": "Markdown",
    "export_json": "JSON (with images)",
    "export_zip": "Fine-tuning zip (LLaMA-Factory)",
    "download": "Download",
    "import": "Import a JSON or zip",
    "imported": "Imported. Ask a follow-up to continue the conversation.",
    "cancel_edit": "Cancel",
    "keep_images": "Pictures that stay with this question (untick to take one off)",
    "share": "Share",
    "revoke": "Revoke link",
    "chats_toggle": "☰ Chats",
    "chats_heading": "**Earlier chats**",
    "camera": "Camera",
    "camera_close": "Close camera",
    "clear_all": "Clear all…",
    "clear_yes": "Remove all",
    "clear_no": "Keep them",
    "undo_clear": "Undo",
}

ZH_CN = {
    "title": "## 和你的照片聊天",
    "media_section": "视频和 PDF",
    "video_frames": "从视频中取的关键帧数（均匀分布）",
    "pdf_pages": "要读取的 PDF 页（留空：从第一页起，能放下多少读多少）",
    "settings": "设置",
    "chat_placeholder": "**把图片拖到这里**（或粘贴截图，或用下方输入框里的回形针添加），然后提问。"
                        "每张图片都有一个标签，提问时可以用它指代图片：“比较 Image 1 和 Image 2”。回车发送。",
    "model_prefix": "模型：",
    "random_banner": "**随机权重的测试模型**：它的回答是随机的词语，并不描述你的图片。",
    "gallery": "图片（可一次拖入多张；整个对话中都会保留）",
    "chatbot": "对话",
    "question": "问一个关于图片的问题……",
    "send": "发送",
    "stop": "停止",
    "regenerate": "重新生成",
    "undo": "撤销",
    "new_chat": "新对话",
    "parameters": "参数",
    "system_prompt": "系统提示词",
    "temperature": "温度（0 = 贪心解码）",
    "top_p": "Top-p",
    "max_new_tokens": "最多生成的词元数",
    "model_sees": "模型看到的内容",
    "no_prompt": "还没有提示词。",
    "prompt": "提示词（图片占位符显示为模型的图片词元）",
    "examples": "**示例**（点击一个：它的图片加入当前对话，问题放入输入框）",
    "example_describe": "描述一个场景",
    "example_ocr": "读取收据",
    "example_compare": "比较两张图片",
    "example_followup": "图表与追问",
    "example_diagram": "解释流程图",
    "model_section": "模型",
    "model_picker": "要使用的模型（对话会保留）",
    "load_model": "加载模型",
    "model_loaded": "已加载。对话已保留：下一个回答会用这个模型重新读取图片。",
    "export_section": "导出 / 导入",
    "export_markdown": "Markdown",
    "export_json": "JSON（含图片）",
    "export_zip": "微调数据 zip（LLaMA-Factory）",
    "download": "下载",
    "import": "导入 JSON 或 zip",
    "imported": "已导入。继续提问即可接着对话。",
    "cancel_edit": "取消",
    "keep_images": "保留在这个问题上的图片（取消勾选即移除）",
    "share": "分享",
    "revoke": "撤销链接",
    "chats_toggle": "☰ 对话",
    "chats_heading": "**以前的对话**",
    "camera": "拍照",
    "camera_close": "关闭摄像头",
    "clear_all": "全部移除…",
    "clear_yes": "全部移除",
    "clear_no": "保留",
    "undo_clear": "撤销",
}

PREFIX = "llava_"


def key(name: str) -> str:
    """The key of ``name`` in the tables the browser gets."""
    return PREFIX + name


# Texts Gradio's own components ask for that its frontend has none for, given here in Gradio's own groups: the
# gallery's camera button asks for "common.webcam" (and showed the key itself in every language); its Chinese
# table lacks the gallery's "Download All" and the chat's copy button.
GRADIO: dict[str, dict] = {
    "en": {"common": {"webcam": "Webcam"}},
    "zh-CN": {"common": {"webcam": "摄像头", "download_all": "全部下载"},
              "chatbot": {"copy_message": "复制消息", "copied_message": "已复制消息"}},
}

TRANSLATIONS = {lang: {**{key(k): v for k, v in table.items()}, **GRADIO[column]}
                for lang, table, column in (("en", EN, "en"), ("zh-CN", ZH_CN, "zh-CN"), ("zh", ZH_CN, "zh-CN"))}


def script_texts() -> dict[str, dict[str, str]]:
    """The page script's own texts (toast titles, the rename prompt, the delete confirmation) by language, for
    page.js: ``{"en": {"toast_warning": "Warning", ...}, "zh-CN": {...}}``."""
    return {lang: {k.removeprefix("script."): texts[column] for k, texts in CATALOGUE.items()
                   if k.startswith("script.")} for lang, column in (("en", 0), ("zh-CN", 1))}

