"""Advice after a run, the presets' reasons and the plan's notes."""

MESSAGES: dict[str, tuple[str, str]] = {
    # the presets' names (the page's picker), what each is for, and why Auto picks one
    "preset.name.auto": ("Auto", "自动"),
    "preset.name.teach_facts": ("Teach facts", "记住知识"),
    "preset.name.quick_test": ("Quick test", "快速测试"),
    "preset.name.balanced": ("Balanced", "均衡"),
    "preset.name.quality": ("Quality", "高质量"),
    "preset.purpose.teach_facts": (
        "LoRA on all seven linear layers (rank {rank}) at learning rate {rate} for {epochs} "
        "epochs, {rows} rows a step: a few hundred question/answer rows (a name, a maker, "
        "product facts) stick. On the bundled demo model, 100 identity rows are enough: the "
        "model then answers with them.",
        "在全部七个线性层上做 LoRA（秩 {rank}），学习率 {rate}，训练 {epochs} 轮，每步 {rows} "
        "行：几百行问答（名字、出品方、产品知识）就能记住。在自带的演示模型上，100 行身份问答"
        "就够了，之后模型就会用它们来回答。"),
    "preset.purpose.quick_test": (
        "{steps} steps of a small adapter (q and v only, learning rate {rate}): checks that the "
        "data, the model and this machine work together in a minute or two. Too little to "
        "teach.",
        "小适配器跑 {steps} 步（只训练 q 和 v，学习率 {rate}）：一两分钟内确认数据、模型和这台"
        "机器能一起工作。训练量太少，学不到东西。"),
    "preset.purpose.balanced": (
        "{epochs} epochs of rank-{rank} LoRA on the attention layers at learning rate {rate}, "
        "{rows} rows an update: the usual recipe for a few thousand rows of instructions or a "
        "chat style.",
        "在注意力层上做秩 {rank} 的 LoRA，学习率 {rate}，训练 {epochs} 轮，每次更新 {rows} 行："
        "几千行指令或对话风格数据的常用配方。"),
    "preset.purpose.quality": (
        "{epochs} epochs of rank-{rank} LoRA on all linear layers at learning rate {rate} with a "
        "cosine schedule: slower, for large datasets where every point of quality counts.",
        "在全部线性层上做秩 {rank} 的 LoRA，学习率 {rate}，余弦调度，训练 {epochs} 轮：更慢，"
        "适合每一点质量都重要的大数据集。"),
    "preset.auto.no_data": (
        "no dataset yet: first fine-tunes are mostly a few hundred rows of facts, which this "
        "teaches",
        "还没有数据集：首次微调多半是几百行知识问答，这个预设正适合"),
    "preset.auto.small": (
        "{rows} rows is a small set: it is learnt by heart in a few epochs at a high learning "
        "rate",
        "{rows} 行是小数据集：用较高的学习率训练几轮就能记住"),
    "preset.auto.large": (
        "{rows} rows is a large set: two epochs at the usual learning rate learn its style "
        "without wearing off what the model knew",
        "{rows} 行是大数据集：用常规学习率训练两轮，学到风格，又不冲掉模型原有的知识"),
    "preset.auto.note": (
        "preset auto -> {name} for the settings not given ({fields}): {why}",
        "自动预设 -> {name}，用于没有给出的设置（{fields}）：{why}"),
    "preset.auto.and": ("{first}; {second}", "{first}；另外，{second}"),

    # where the time estimate's speed comes from (studio.service Service.time_estimate)
    "plan.speed.measured": ("measured on this machine for these settings",
                            "在本机用这些设置测得"),
    "plan.speed.last_run": ("as the last run of this model went ({run})",
                            "按这个模型上一次运行的速度（{run}）"),

    # advice after a run whose validation loss says it did not learn
    "advice.overfit": (
        "The validation loss rose from {best:.2f} to {last:.2f}: the model learnt the training "
        "rows past the point where it helps. Train fewer epochs (or set max_steps near the "
        "lowest point), or lower learning_rate.",
        "验证损失从 {best:.2f} 升到了 {last:.2f}：模型把训练数据学过了头，已经超出有用的程度。"
        "请减少训练轮数（或把 max_steps 设在损失最低点附近），或者降低 learning_rate。"),
    "advice.still_high": (
        "The validation loss is still {last:.2f}{shown}: {what}. Try {tips}{preset}.",
        "验证损失仍为 {last:.2f}{shown}：{what}。可以试试：{tips}{preset}。"),
    "advice.answers_said": (
        ", and {said} of {answers} answers at the end gave their reference",
        "，最后的 {answers} 个回答中有 {said} 个给出了参考答案"),
    "advice.not_stuck": ("the answers in the data have not stuck yet", "数据里的答案还没有记住"),
    "advice.barely_moved": ("the model has barely moved towards the data",
                            "模型几乎没有向数据靠拢"),
    "advice.teach_preset": (" (the {preset} preset sets most of these)",
                            "（“{preset}”预设会设好其中大部分）"),
    "advice.tips.and": ("{first}; {next}", "{first}；并{next}"),
    "advice.tip.more_epochs": ("more epochs", "训练更多轮"),
    "advice.tip.learning_rate": ("learning_rate {now:g} -> 1e-3",
                                 "把 learning_rate 从 {now:g} 调到 1e-3"),
    "advice.tip.all_linear": ("target_modules: all seven linear layers",
                              "把 target_modules 设为全部七个线性层"),
    "advice.tip.more_steps": ("more steps than max_steps={steps} (or clear it and use epochs)",
                              "训练比 max_steps={steps} 更多的步数（或清空它，改按训练轮数计）"),
    "advice.tip.epochs": ("num_train_epochs {now:g} -> {then:g}",
                          "把 num_train_epochs 从 {now:g} 调到 {then:g}"),
    "advice.tip.lora_r": ("lora_r {now} -> 16", "把 lora_r 从 {now} 调到 16"),

    # the plan: why this backend, how the batches are laid out
    "plan.compiled": (
        "transformers, its decoder layers compiled and replayed as CUDA graphs: a model under "
        "{billions:.0f}B parameters with short micro-batches waits on the host's kernel "
        "launches otherwise, and the graphs take those off the host; compile_layers off keeps "
        "the usual backend",
        "transformers，解码层编译后以 CUDA 图重放：参数量低于 {billions:.0f}B、微批次又短的"
        "模型，否则会一直等主机逐个发起 kernel，CUDA 图让主机不再承担这些发起；关闭 "
        "compile_layers 则使用常用的后端"),
    "plan.rows": (
        "{rows} rows a micro-batch x {times} = the {wanted} rows an update asks for; "
        "padding-free, up to {longest} tokens; {how} ({used:.0f} GiB of {free:.0f} GiB free "
        "at most)",
        "每个微批次 {rows} 行 x {times} = 每次更新要求的 {wanted} 行；无填充，最多 {longest} "
        "个 token；{how}（最多占用 {used:.0f} GiB，空闲 {free:.0f} GiB）"),
    "plan.rows.checkpointing_on": ("gradient checkpointing on, as set", "按设置开启梯度检查点"),
    "plan.rows.checkpointing_off": ("gradient checkpointing off, as set", "按设置关闭梯度检查点"),
    "plan.rows.no_recompute": ("no layer recomputes", "没有层需要重算"),
    "plan.rows.adaptive": (
        "layers recompute only in micro-batches over about {tokens} tokens, {layers} of "
        "{total} at the longest",
        "只有超过约 {tokens} 个 token 的微批次才重算层，最长的微批次重算 {total} 层中的 "
        "{layers} 层"),
    "plan.packs.checkpointing": (
        "{tokens} packed tokens a micro-batch{as_set} with gradient checkpointing ({used:.0f} "
        "of {free:.0f} GiB free), {steps} a step: about the {wanted:.0f} tokens an update that "
        "batch_size x gradient_accumulation_steps ask for",
        "每个微批次打包 {tokens} 个 token{as_set}，开启梯度检查点（占用 {used:.0f} GiB，空闲 "
        "{free:.0f} GiB），每步 {steps} 个微批次：约等于 batch_size x "
        "gradient_accumulation_steps 要求的每次更新 {wanted:.0f} 个 token"),
    "plan.packs.no_checkpointing": (
        "{tokens} packed tokens a micro-batch{as_set} without gradient checkpointing "
        "({used:.0f} of {free:.0f} GiB free), {steps} a step: about the {wanted:.0f} tokens an "
        "update that batch_size x gradient_accumulation_steps ask for",
        "每个微批次打包 {tokens} 个 token{as_set}，不开梯度检查点（占用 {used:.0f} GiB，空闲 "
        "{free:.0f} GiB），每步 {steps} 个微批次：约等于 batch_size x "
        "gradient_accumulation_steps 要求的每次更新 {wanted:.0f} 个 token"),
    "plan.packs.as_set": (", as set,", "（按设置）"),
    "plan.as_asked": ("{why}: the batch as asked for, with gradient checkpointing",
                      "{why}：按要求的批次训练，并开启梯度检查点"),
    "plan.no_rows": ("no rows to plan with yet", "还没有可用来规划的数据行"),
    "plan.unknown_architecture": ("unknown architecture", "未知的模型架构"),
    "plan.nothing_fits": ("by the estimate no micro-batch fits the {gib:.1f} GiB free",
                          "按估算，空闲的 {gib:.1f} GiB 放不下任何微批次"),

    # out of memory: what to change so the run fits
    "plan.out_of_memory": ("out of memory: {advice}", "内存不足：{advice}"),
    "plan.oom.try": ("try {tips}", "可以试试{tips}"),
    "plan.oom.or": ("{first}; or {next}", "{first}；或者{next}"),
    "plan.oom.tokens_per_batch": ("tokens_per_batch {now} -> {then}",
                                  "把 tokens_per_batch 从 {now} 降到 {then}"),
    "plan.oom.batch_size": (
        "batch_size {now} -> {then} with gradient_accumulation_steps {steps} -> {more} (same "
        "effective batch)",
        "把 batch_size 从 {now} 降到 {then}，同时把 gradient_accumulation_steps 从 {steps} "
        "升到 {more}（有效批次不变）"),
    "plan.oom.max_seq_length": ("max_seq_length {now} -> {then}",
                                "把 max_seq_length 从 {now} 降到 {then}"),
    "plan.oom.checkpointing": ("gradient_checkpointing on", "开启 gradient_checkpointing"),
    "plan.oom.4bit": ("load_in_4bit on (QLoRA)", "开启 load_in_4bit（QLoRA）"),
    "plan.oom.smaller_model": ("a smaller model", "换一个更小的模型"),
}
