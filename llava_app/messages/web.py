"""What the page itself says: notices, the strip's count, the chat's marks, the meter, the list of earlier
chats, share links, dates, and the page script's own texts (toast titles, the delete confirmation)."""

TEXTS: dict[str, tuple[str, str]] = {
    # notices under the strip, and the model picker's
    "notice.added": ("Added {labels}.", "已添加 {labels}。"),
    "notice.removed": ("Removed {labels}.", "已移除 {labels}。"),
    "notice.elsewhere": (
        "This browser's conversation is open in another tab. This tab starts a new one, which is not kept across "
        "reloads; the other tab keeps yours.",
        "这个浏览器的对话已在另一个标签页中打开。此标签页开始一个新对话（重新加载后不会保留）；你的对话保留在另一个标"
        "签页中。"),
    "notice.clear_ask": ("Remove all {count} pictures from this chat? The model will no longer see them.",
                         "要从这个对话中移除全部 {count} 张图片吗？模型将不再看到它们。"),
    "notice.cleared": ("Removed {labels}. Undo puts them back.", "已移除 {labels}。点“撤销”可放回。"),
    "notice.nothing_to_clear": ("There are no pictures to remove.", "没有可移除的图片。"),
    "notice.restored": ("Put back {labels}.", "已放回 {labels}。"),
    "notice.not_restored": ("These pictures can no longer be put back.", "这些图片已无法放回。"),
    "notice.links_not_fetched": (
        "This server does not fetch pictures from links, so the model reads only the address. To ask about the "
        "picture, download it and attach it.",
        "这个服务器不从链接获取图片，模型只会读到网址本身。要询问那张图片，请先下载再添加。"),
    "notice.regenerating": (
        "Regenerating with temperature {temperature} (sampling): at temperature 0 the model would write the same "
        "answer again.",
        "以温度 {temperature} 重新生成（采样）：温度为 0 时模型会写出完全相同的回答。"),
    "notice.model_failed": ("The model failed on this request ({kind}). Your conversation is kept; try again.",
                            "模型处理这个请求时出错（{kind}）。对话已保留，请重试。"),
    "switch.refused": ("Only the server's admins may switch the model (it changes it for every user).",
                       "只有服务器的管理员可以切换模型（切换会影响所有用户）。"),
    "switch.still_using": ("Still using {name}.", "仍在使用 {name}。"),
    # the limits beside the strip
    "strip.count": ("{count} of {limit} images", "{count} / {limit} 张图片"),
    "strip.count_per_question": ("{count} of {limit} images · up to {per} with one question",
                                 "{count} / {limit} 张图片 · 每个问题最多 {per} 张"),
    # the chat's own marks (never applied to what people or the model wrote)
    "mark.stopped": ("*(stopped)*", "*（已停止）*"),
    "mark.interrupted": ("*(interrupted: cut off before the end; Regenerate writes it again)*",
                         "*（已中断：回答在结尾前被截断；“重新生成”会重写）*"),
    "mark.cut_length": ("*(cut: the answer reached its length limit)*", "*（已截断：回答达到了长度上限）*"),
    "mark.cut_server": ("*(cut off by the server before the end; Regenerate writes it again)*",
                        "*（回答在结尾前被服务器中断；“重新生成”会重写）*"),
    "mark.waiting": ("*{place:ord} in line: your answer starts as soon as the model is free…*",
                     "*排队第 {place} 位：模型一空闲就开始写你的回答…*"),
    "mark.removed": ("*[{label}, removed]*", "*[{label}，已移除]*"),
    # what an answer points at, under it
    "boxes.raw": ("{count} boxes as the model wrote them", "模型写出的 {count} 个框（原文）"),
    "boxes.raw_one": ("1 box as the model wrote it", "模型写出的 1 个框（原文）"),
    "boxes.open": ("Open {label} large, with its boxes", "放大查看 {label} 及其中的框"),
    "boxes.unplaced": ("Not drawn (the answer does not say on which picture):", "未画出（回答没有说明在哪张图片上）："),
    "boxes.unnamed": ("box {number}", "框 {number}"),
    "tools.edit": ("Edit", "编辑"),
    "tools.edit_title": ("Edit this question", "编辑这个问题"),
    "tools.previous": ("Previous version", "上一个版本"),
    "tools.next": ("Next version", "下一个版本"),
    "footer.first_token": ("first token {seconds:.2f} s", "首个词元 {seconds:.2f} 秒"),
    "footer.rate": ("{rate:.0f} tok/s", "{rate:.0f} 词元/秒"),
    "footer.tokens": ("{count} tokens", "{count} 个词元"),
    "footer.queued": ("in line {seconds:.2f} s", "排队 {seconds:.2f} 秒"),
    "footer.images": ("images: {cached} from the cache, {encoded} encoded",
                      "图片：{cached} 张来自缓存，{encoded} 张新编码"),
    # the prompt statistics and the context meter
    "stats.prompt_one": ("**1** image in the prompt ({labels}) · **{tokens}** prompt tokens",
                         "提示词中有 **1** 张图片（{labels}）· **{tokens}** 个提示词元"),
    "stats.prompt": ("**{images}** images in the prompt ({labels}) · **{tokens}** prompt tokens",
                     "提示词中有 **{images}** 张图片（{labels}）· **{tokens}** 个提示词元"),
    "stats.no_labels": ("none", "无"),
    "stats.source_server": ("as the model server's own template renders it", "由模型服务器自己的模板渲染"),
    "stats.source_app": ("the messages as sent; the model server's template renders the real prompt",
                         "这是发送的消息；真正的提示词由模型服务器的模板渲染"),
    "meter.used_of_window": ("Context: **{used:,}** / {window:,} tokens ({percent:.0f}%)",
                             "上下文：**{used:,}** / {window:,} 词元（{percent:.0f}%）"),
    "meter.used": ("Context: **{used:,}** tokens", "上下文：**{used:,}** 词元"),
    "meter.window": ("Context window: {window:,} tokens", "上下文窗口：{window:,} 词元"),
    "meter.image": ("{count} image", "{count} 张图片"),
    "meter.images": ("{count} images", "{count} 张图片"),
    "meter.image_tokens": ("{count} image ({tokens:,} tokens)", "{count} 张图片（{tokens:,} 词元）"),
    "meter.images_tokens": ("{count} images ({tokens:,} tokens)", "{count} 张图片（{tokens:,} 词元）"),
    "meter.hidden_turn": ("{count} earlier turn no longer seen by the model", "模型已看不到较早的 {count} 个回合"),
    "meter.hidden_turns": ("{count} earlier turns no longer seen by the model", "模型已看不到较早的 {count} 个回合"),
    "meter.summarised": (" (summarised)", "（已摘要）"),
    # the note under the turns the model no longer sees
    "note.title_turn": ("The model no longer sees the turn above", "模型已看不到上面这个回合"),
    "note.title_turns": ("The model no longer sees the {count} turns above", "模型已看不到上面这 {count} 个回合"),
    "note.body_window": (
        "They no longer fit in its {window:,}-token context window; every image in the gallery is still in its prompt.",
        "它们已放不进模型 {window:,} 词元的上下文窗口；图片栏中的每张图片仍在提示词中。"),
    "note.body": ("They no longer fit in its context window; every image in the gallery is still in its prompt.",
                  "它们已放不进模型的上下文窗口；图片栏中的每张图片仍在提示词中。"),
    "note.summary": ("\n\nIt keeps this summary of them instead: *{summary}*",
                     "\n\n模型改为保留它们的这段摘要：*{summary}*"),
    # editing a question
    "edit.bar_ticked": (
        "**Editing question {number}**: Send asks it again, what followed stays on its own branch. Ticked pictures "
        "stay with it; attached ones join it.",
        "**正在编辑第 {number} 个问题**：发送即重新提问，之后的内容保留在原来的分支上。勾选的图片留在这个问题上，新添"
        "加的图片也会加入。"),
    "edit.bar_attached": (
        "**Editing question {number}**: Send asks it again, what followed stays on its own branch. Pictures attached "
        "now join it.",
        "**正在编辑第 {number} 个问题**：发送即重新提问，之后的内容保留在原来的分支上。现在添加的图片会加入这个问题。"),
    "edit.wait": ("Wait for the answer being written, or press Stop, before editing a question.",
                  "请等待正在生成的回答，或先按“停止”，再编辑问题。"),
    # the list of earlier chats
    "list.not_saved": ("Conversations are not saved on this server.", "这个服务器不保存对话。"),
    "list.empty": ("Your conversations appear here once you ask a question.", "提问之后，你的对话会出现在这里。"),
    "list.untitled": ("Untitled", "未命名"),
    "list.turn": ("{count} turn", "{count} 轮"),
    "list.turns": ("{count} turns", "{count} 轮"),
    "list.open": ("Open this conversation", "打开这个对话"),
    "list.rename": ("Rename", "重命名"),
    "list.delete": ("Delete", "删除"),
    "list.kept_day": (
        "Kept in this browser for {days:g} day after their last use; the oldest go first once all of them together "
        "pass {mb:,.0f} MB.",
        "在这个浏览器中保留到最后一次使用后 {days:g} 天；全部对话合计超过 {mb:,.0f} MB 时，最旧的先删除。"),
    "list.kept_days": (
        "Kept in this browser for {days:g} days after their last use; the oldest go first once all of them together "
        "pass {mb:,.0f} MB.",
        "在这个浏览器中保留到最后一次使用后 {days:g} 天；全部对话合计超过 {mb:,.0f} MB 时，最旧的先删除。"),
    "list.kept": ("Kept in this browser; the oldest go first once all of them together pass {mb:,.0f} MB.",
                  "保留在这个浏览器中；全部对话合计超过 {mb:,.0f} MB 时，最旧的先删除。"),
    "date.day_time": ("{day:02d} {month} {time}", "{month}月{day}日 {time}"),
    **{f"date.month.{n}": (name, str(n)) for n, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)},
    # share links
    "share.link": ("Read-only link to the branch shown (anyone with it can read it, until {until}):",
                   "当前分支的只读链接（任何拿到链接的人都能查看，有效期至 {until}）："),
    "sharepage.title": ("Shared conversation", "分享的对话"),
    "sharepage.model": ("Answers by {model}", "回答由 {model} 生成"),
    "sharepage.footer": ("A read-only snapshot. This link works until {until}.",
                         "只读快照。此链接在 {until} 之前有效。"),
    "sharepage.copy": ("Copy", "复制"),
    "sharepage.copy_title": ("Copy this answer", "复制这个回答"),
    "sharepage.copied": ("Copied", "已复制"),
    "sharepage.not_found": ("This shared conversation does not exist, expired or was revoked.",
                            "这个分享的对话不存在、已过期或已被撤销。"),
    "share.revoked": ("Link revoked: it no longer opens.", "链接已撤销，无法再打开。"),
    # the page script's own texts (page.js): toast titles, the rename prompt, the delete confirmation
    "script.toast_warning": ("Warning", "警告"),
    "script.toast_error": ("Error", "错误"),
    "script.toast_info": ("Info", "提示"),
    "script.toast_success": ("Success", "成功"),
    "script.remove_image": ("Remove {label}", "移除 {label}"),
    "script.ok": ("OK", "确定"),
    "script.close": ("Close ✕", "关闭 ✕"),
    "script.download": ("Download", "下载"),
    "script.ask_region": ("Ask about this region", "就这个区域提问"),
    "script.region_hint": ("Drag a box on the picture, or tap a point, to ask about that part.",
                           "在图片上拖出一个框，或点一个点，就可以就那一部分提问。"),
    "script.region_chip": ("{label} · region", "{label} · 区域"),
    "script.point_chip": ("{label} · point", "{label} · 点"),
    "script.remove_region": ("Remove the region of {label}", "移除 {label} 的区域"),
    "script.cancel": ("Cancel", "取消"),
    "script.latest": ("Jump to the latest message", "跳到最新消息"),
    "script.latest_short": ("Latest", "最新"),
    "script.rename_prompt": ("A new title for this conversation (empty: its first question):",
                             "这个对话的新标题（留空：用它的第一个问题）："),
    "script.delete_confirm": ("Delete this conversation and its pictures from this browser's list?",
                              "要从这个浏览器的列表中删除这个对话及其图片吗？"),
    # the API's arguments, refused (clients read them in English; the page never sends such values)
    "api.remove_numbers": ("remove must list image numbers (2) or labels (\"Image 2\").",
                           "remove 必须列出图片编号（2）或标签（\"Image 2\"）。"),
    "api.whole_number": ("{what} must be a whole number (0 for the first).", "{what} 必须是整数（0 表示第一个）。"),
    "api.urls": ("urls must be a list of http(s) URLs (strings).", "urls 必须是 http(s) URL（字符串）的列表。"),
    # the operator's login settings (read at start-up)
    "auth.bad_line": ("{where}: expected user:password", "{where}：应为 user:password"),
    "auth.unreadable": ("cannot read --auth-file {path}: {reason}", "无法读取 --auth-file {path}：{reason}"),
    "auth.empty": ("--auth-file {path} has no user:password lines", "--auth-file {path} 中没有 user:password 行"),
    "auth.twice": ("the same user name is given twice in --auth / --auth-file",
                   "--auth / --auth-file 中同一个用户名出现了两次"),
}
