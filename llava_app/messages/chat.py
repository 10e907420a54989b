"""What the conversation's rules say: questions, answers, pictures, branches, saved chats, share links."""

TEXTS: dict[str, tuple[str, str]] = {
    # questions and answers
    "chat.type_first": ("Type a question first.", "请先输入问题。"),
    "chat.too_long": ("Your question is {length:,} characters long; the limit is {limit:,}. Shorten it and send again.",
                      "你的问题有 {length:,} 个字符，上限是 {limit:,}。请缩短后再发送。"),
    "chat.still_writing": ("The previous answer is still being written. Wait for it or press Stop.",
                           "上一个回答还在生成。请等待或按“停止”。"),
    "chat.wait_regenerate": ("Wait for the current answer, or press Stop, before regenerating.",
                             "请等待当前回答，或先按“停止”，再重新生成。"),
    "chat.wait_edit": ("Wait for the current answer, or press Stop, before editing a question.",
                       "请等待当前回答，或先按“停止”，再编辑问题。"),
    "chat.wait_switch": ("Wait for the current answer, or press Stop, before switching branch.",
                         "请等待当前回答，或先按“停止”，再切换分支。"),
    "chat.stop_undo": ("Press Stop before undoing the answer that is being written.",
                       "正在生成回答，请先按“停止”再撤销。"),
    "chat.too_many_turns": (
        "This conversation has reached {limit} turns, the most one conversation holds here. Start a new chat.",
        "这个对话已达到 {limit} 个回合，这里一个对话最多容纳这么多。请开始新对话。"),
    "branch.too_many": (
        "This conversation already keeps {limit} turns on all its branches, the most it can hold. Start a new "
        "chat, or undo some answers.",
        "这个对话的所有分支已共有 {limit} 个回合，已达上限。请开始新对话，或撤销一些回答。"),
    "chat.nothing_undo": ("There is nothing to undo.", "没有可撤销的内容。"),
    "chat.nothing_regenerate": ("There is no answer to regenerate yet.", "还没有可重新生成的回答。"),
    "chat.queue_full": ("The queue is full: {waiting} answers are waiting for the model. Try again in a minute.",
                        "队列已满：有 {waiting} 个回答在等待模型。请过一分钟再试。"),
    # pictures in a conversation
    "chat.too_many_images": (
        "This conversation already has {count} images, the limit is {limit}. Remove one (x on its thumbnail) or start "
        "a new chat.",
        "这个对话已有 {count} 张图片，上限是 {limit} 张。请移除一张（缩略图上的 x）或开始新对话。"),
    "chat.too_many_new": (
        "At most {limit} new images go with one question, and {waiting} are waiting already. Ask about them first, "
        "then add more.",
        "每个问题最多附带 {limit} 张新图片，已有 {waiting} 张在等待。请先就它们提问，再添加更多。"),
    "chat.label_twice": ("{label} is given twice; each image needs a label of its own.",
                         "{label} 出现了两次；每张图片都需要自己的标签。"),
    "chat.no_image": ("There is no {label} in this conversation.", "这个对话中没有 {label}。"),
    # regions a person marks on a picture, and what answers point at
    "region.format": (
        'A region is {{"image": 2, "box": [x1, y1, x2, y2]}} or {{"image": 2, "point": [x, y]}}, in the picture\'s '
        "own pixels.",
        '区域的格式是 {{"image": 2, "box": [x1, y1, x2, y2]}} 或 {{"image": 2, "point": [x, y]}}，'
        "单位是图片自身的像素。"),
    "region.too_many": ("At most {limit} regions go with one question.", "每个问题最多附带 {limit} 个区域。"),
    "region.outside": ("That region lies outside {label}, which is {width} x {height} pixels.",
                       "这个区域在 {label} 之外；{label} 的大小是 {width} x {height} 像素。"),
    "region.no_turn": ("There is no turn {turn} in this conversation; it has {count}.",
                       "这个对话中没有第 {turn} 个回合；它共有 {count} 个。"),
    "upload.named": ("{name}: {problem}", "{name}：{problem}"),
    "upload.duplicate": ("{name} is already in this conversation as {label}.",
                         "{name} 已在这个对话中，标签为 {label}。"),
    "upload.unreadable": ("{name} could not be read.", "无法读取 {name}。"),
    "upload.no_urls": (
        "This server does not fetch pictures from links; download the picture and attach it instead.",
        "这个服务器不从链接获取图片；请先下载图片再添加。"),
    # edits and branches
    "branch.no_turn_to_edit": ("There is no turn {number} to edit; this branch has {count}.",
                               "没有可编辑的第 {number} 个回合；这个分支只有 {count} 个。"),
    "branch.not_turn_image": ("{label} is not one of turn {number}'s images.",
                              "{label} 不是第 {number} 个回合的图片。"),
    "branch.not_waiting": ("{label} is not waiting to be sent.", "{label} 不在等待发送的图片中。"),
    "branch.no_turn": ("There is no turn {number} on this branch; it has {count}.",
                       "这个分支上没有第 {number} 个回合；它只有 {count} 个。"),
    "branch.wait_switch": ("Wait for the answer being written, or press Stop, before switching branch.",
                           "请等待正在生成的回答，或先按“停止”，再切换分支。"),
    "branch.no_version": ("Turn {number} has {count} version(s); there is no number {index}.",
                          "第 {number} 个回合有 {count} 个版本；没有第 {index} 个。"),
    # the context window
    "context.no_room": (
        "Max new tokens ({tokens:,}) leaves no room for the prompt in the model's {window:,}-token context window. "
        "Lower it.",
        "最多生成的词元数（{tokens:,}）使模型 {window:,} 词元的上下文窗口放不下提示词。请调低它。"),
    "context.images_too_big": (
        "The {images} {image_tokens:,} tokens, but the model's context window is {window:,} tokens, and {answer:,} of "
        "them are kept for the answer{text}. Remove some images (x on a thumbnail), lower Max new tokens, or pick a "
        "model with a longer context window.",
        "{images}占用 {image_tokens:,} 个词元，但模型的上下文窗口只有 {window:,} 个词元，其中 {answer:,} 个留给回答"
        "{text}。请移除一些图片（缩略图上的 x）、调低“最多生成的词元数”，或选择上下文窗口更长的模型。"),
    "context.one_image": ("image in this conversation takes", "这个对话中的图片"),
    "context.images": ("{count} images in this conversation take", "这个对话中的 {count} 张图片"),
    "context.and_text": (" and {tokens:,} for the text", "，{tokens:,} 个留给文字"),
    "context.text_too_big": (
        "This question and the system prompt take {text:,} tokens; with {answer:,} kept for the answer, the model's "
        "{window:,}-token context window has room for {room:,}. Shorten the question or the system prompt, or lower "
        "Max new tokens.",
        "这个问题和系统提示词占用 {text:,} 个词元；留给回答 {answer:,} 个之后，模型 {window:,} 词元的上下文窗口只剩 "
        "{room:,} 个。请缩短问题或系统提示词，或调低“最多生成的词元数”。"),
    # saved conversations, export and import, share links
    "saved.not_listed_maybe_deleted": ("That conversation is not in this browser's list (it may have been deleted).",
                                       "这个对话不在此浏览器的列表中（可能已被删除）。"),
    "saved.open_elsewhere": ("That conversation is open in another tab of this browser; continue it there.",
                             "这个对话已在此浏览器的另一个标签页中打开，请在那里继续。"),
    "saved.not_listed": ("That conversation is not in this browser's list.", "这个对话不在此浏览器的列表中。"),
    "app.stop_before_open": ("Press Stop, or wait for the answer, before opening another conversation.",
                             "请先按“停止”或等待回答，再打开另一个对话。"),
    "app.stop_before_import": ("Press Stop, or wait for the answer, before importing a conversation.",
                               "请先按“停止”或等待回答，再导入对话。"),
    "app.nothing_to_export": ("There is nothing to export yet: add images or ask a question first.",
                              "还没有可导出的内容：请先添加图片或提问。"),
    "share.off": ("Sharing is off on this server (the operator can allow it with --share-links).",
                  "这个服务器关闭了分享（运营者可以用 --share-links 开启）。"),
    "share.nothing": ("There is nothing to share yet: ask a question first.", "还没有可分享的内容：请先提问。"),
    "share.not_yours": ("That link is not one of yours, or it is gone already.", "这个链接不是你的，或者已经失效。"),
}
