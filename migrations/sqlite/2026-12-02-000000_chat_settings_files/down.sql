DROP TABLE chat_files;
DROP TABLE chat_settings;
