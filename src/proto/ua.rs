//! User-Agent classes for `ua_filter`: browsers (Chromium, Firefox, Safari), AI agents and
//! fetchers (`llm`), crawlers and HTTP tools (`bot`). Looks at the first 512 bytes,
//! case-insensitively. Pure.

/// What a User-Agent is, as far as routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UaClass {
    pub browser: Option<Browser>,
    pub llm: bool,
    pub bot: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Browser {
    Chromium,
    Firefox,
    Safari,
}

/// AI crawlers, assistants and fetchers (matched as lowercase substrings).
const LLM: &[&str] = &[
    "gptbot",
    "chatgpt-user",
    "oai-searchbot",
    "claudebot",
    "claude-user",
    "claude-searchbot",
    "claude-web",
    "anthropic-ai",
    "anthropic",
    "perplexitybot",
    "perplexity-user",
    "google-extended",
    "googleother",
    "ccbot",
    "bytespider",
    "applebot-extended",
    "meta-externalagent",
    "meta-externalfetcher",
    "facebookbot",
    "amazonbot",
    "cohere-ai",
    "cohere-training-data-crawler",
    "diffbot",
    "youbot",
    "ai2bot",
    "timpibot",
    "omgili",
    "imagesiftbot",
    "mistralai-user",
    "duckassistbot",
    "petalbot",
];

/// Search and SEO crawlers, monitors, and HTTP libraries and tools.
const BOT: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "crawl",
    "googlebot",
    "bingbot",
    "yandex",
    "baiduspider",
    "duckduckbot",
    "sogou",
    "exabot",
    "facebookexternalhit",
    "ia_archiver",
    "semrush",
    "ahrefs",
    "mj12bot",
    "dotbot",
    "uptimerobot",
    "pingdom",
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "httpx",
    "go-http-client",
    "java/",
    "okhttp",
    "apache-httpclient",
    "libwww-perl",
    "node-fetch",
    "axios/",
    "undici",
    "postmanruntime",
    "insomnia",
    "httpie",
    "wrk",
    "ab/",
    "k6/",
    "scrapy",
    "guzzlehttp",
    "ruby",
    "reqwest",
    "hyper/",
    "powershell",
];

pub fn classify(ua: &[u8]) -> UaClass {
    let head = &ua[..ua.len().min(512)];
    let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
    let has = |s: &str| lower.contains(s);
    let llm = LLM.iter().any(|s| has(s));
    let bot = llm || BOT.iter().any(|s| has(s));
    let browser = if bot || !has("mozilla/") {
        None
    } else if has("firefox") || has("fxios") {
        Some(Browser::Firefox)
    } else if has("chrom") || has("crios") || has("opera") || has("opr/") || has("edg") {
        Some(Browser::Chromium)
    } else if has("safari") {
        Some(Browser::Safari)
    } else {
        None
    };
    UaClass { browser, llm, bot }
}

impl UaClass {
    pub fn label(&self) -> &'static str {
        match (self.llm, self.bot, self.browser) {
            (true, _, _) => "llm",
            (_, true, _) => "bot",
            (_, _, Some(Browser::Chromium)) => "chromium",
            (_, _, Some(Browser::Firefox)) => "firefox",
            (_, _, Some(Browser::Safari)) => "safari",
            _ => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (ua, label) in [
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "chromium"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", "firefox"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", "safari"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/120.0 Mobile/15E148 Safari/605.1.15", "firefox"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0 Mobile/15E148 Safari/604.1", "chromium"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0", "chromium"),
            ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", "llm"),
            ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot", "llm"),
            ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", "llm"),
            ("Claude-User/1.0", "llm"),
            ("Mozilla/5.0 (compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)", "llm"),
            ("CCBot/2.0 (https://commoncrawl.org/faq/)", "llm"),
            ("Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)", "llm"),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
            ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bot"),
            ("curl/8.5.0", "bot"),
            ("Wget/1.21.4", "bot"),
            ("python-requests/2.31.0", "bot"),
            ("Go-http-client/1.1", "bot"),
            ("", "other"),
            ("SomethingElse/1.0", "other"),
        ] {
            assert_eq!(classify(ua.as_bytes()).label(), label, "{ua}");
        }
    }

    #[test]
    fn only_the_first_512_bytes_count() {
        let ua = format!("{}GPTBot", "x".repeat(600));
        assert!(!classify(ua.as_bytes()).llm);
    }
}
