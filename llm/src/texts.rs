//! The default teacher-forcing texts: written for qdiff, in the genres a small chat model sees
//! (a story, prose, code, a list, chat-formatted prompts with the ChatML markers SmolLM2 and Qwen
//! use). Each text is its own sequence (its own KV cache), fed in this order until the position
//! budget is spent.

/// One named text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text {
    /// A short name shown in results.
    pub name: &'static str,
    /// The text itself.
    pub text: &'static str,
}

/// The default set, in feeding order.
pub const DEFAULT: &[Text] = &[
    Text {
        name: "story",
        text: "The lighthouse keeper had not spoken to anyone in eleven days when the boat arrived. \
It was small and painted a faded green, and the woman who rowed it wore a coat two sizes too big. \
She tied the rope to the iron ring at the bottom of the steps and looked up at him as if she had \
expected him to be taller. \"I brought your letters,\" she said, holding up a bundle wrapped in oilcloth. \
\"The post office closed in March. Nobody told you?\" He shook his head. Nobody had told him anything \
for a long time. He made tea on the little stove while she read the names on the envelopes aloud, \
and when the kettle began to whistle they both laughed, because it sounded exactly like the wind \
coming through the broken window on the landing. By the time the tide turned she had mended the \
window with a square of canvas and a handful of tacks, and he had remembered how to tell a joke.",
    },
    Text {
        name: "chat-recipe",
        text: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHow do I make \
a simple tomato soup for two people?<|im_end|>\n<|im_start|>assistant\nHere is a quick tomato soup for two:\n\n\
1. Chop one onion and two cloves of garlic.\n2. Soften them in a tablespoon of olive oil over medium heat \
for five minutes.\n3. Add a 400 g can of chopped tomatoes and 300 ml of vegetable stock.\n4. Simmer for \
fifteen minutes, then blend until smooth.\n5. Season with salt, pepper and a pinch of sugar.\n\nServe it \
hot with bread. If you like it creamy, stir in two tablespoons of cream at the end.<|im_end|>\n",
    },
    Text {
        name: "code-python",
        text: "def moving_average(values, window):\n    \"\"\"Return the moving average of `values` over `window` items.\"\"\"\n\
    if window <= 0:\n        raise ValueError(\"window must be positive\")\n    out = []\n    total = 0.0\n\
    for i, v in enumerate(values):\n        total += v\n        if i >= window:\n            total -= values[i - window]\n\
        if i >= window - 1:\n            out.append(total / window)\n    return out\n\n\nif __name__ == \"__main__\":\n\
    print(moving_average([1, 2, 3, 4, 5, 6], 3))  # [2.0, 3.0, 4.0, 5.0]\n",
    },
    Text {
        name: "explainer",
        text: "Quantization stores the weights of a neural network with fewer bits than the 32 of a float. \
A group of 32 weights shares one scale, and each weight is rounded to the nearest of sixteen levels, \
so a 4-bit weight takes an eighth of the memory of its float original. The price is a small error \
in every product, and most of the time the errors cancel. Sometimes they do not: an outlier in a \
group stretches the scale, the other weights lose precision, and the model's most likely next word \
changes. That is why people who ship quantized models measure how often the top prediction agrees \
with the original model, and not only the average error.",
    },
    Text {
        name: "chat-math",
        text: "<|im_start|>user\nWhat is 17 times 24? Show your steps.<|im_end|>\n<|im_start|>assistant\n\
17 times 24 can be split into 17 times 20 plus 17 times 4.\n17 x 20 = 340\n17 x 4 = 68\n\
340 + 68 = 408\nSo 17 times 24 is 408.<|im_end|>\n",
    },
    Text {
        name: "list",
        text: "Packing list for a weekend hike:\n- water bottle (1 litre)\n- rain jacket\n- map and compass\n\
- sandwiches, apples and a bar of chocolate\n- first aid kit\n- head torch with spare batteries\n\
- warm hat, even in summer\n- phone, charged\n\nDay 1: start at the car park at 8:30, lunch by the lake, \
camp below the ridge.\nDay 2: summit before 10:00, descend by the eastern path, back by 15:00.\n",
    },
    Text {
        name: "code-rust",
        text: "use std::collections::HashMap;\n\n/// Counts how often each word occurs in `text`.\n\
fn word_counts(text: &str) -> HashMap<String, usize> {\n    let mut counts = HashMap::new();\n\
    for word in text.split_whitespace() {\n        let w = word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();\n\
        if !w.is_empty() {\n            *counts.entry(w).or_insert(0) += 1;\n        }\n    }\n    counts\n}\n\n\
fn main() {\n    let counts = word_counts(\"the cat and the hat\");\n    assert_eq!(counts[\"the\"], 2);\n}\n",
    },
    Text {
        name: "chat-advice",
        text: "<|im_start|>user\nI have an interview tomorrow and I am nervous. Any advice?<|im_end|>\n\
<|im_start|>assistant\nBeing nervous is normal, and it usually means you care about doing well. \
Tonight, read the job description once more and write down three examples from your own work that \
match it. Prepare one question to ask them. Get a good night's sleep, eat breakfast, and leave early \
so you are not rushing. During the interview, it is fine to pause before you answer. Good luck!<|im_end|>\n",
    },
];

/// The texts of a file given by the user: parts separated by two blank lines (three newlines)
/// become separate sequences, named `NAME#1`, `NAME#2`, ...; single blank lines stay inside a
/// text (chat turns, code).
pub fn from_file_text(name: &str, content: &str) -> Vec<(String, String)> {
    content
        .split("\n\n\n")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| (format!("{name}#{}", i + 1), t.to_string()))
        .collect()
}
